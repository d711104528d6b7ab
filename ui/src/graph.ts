// Circuit / attribution graph, laid out by layer (y: input at the bottom, logits at the top) and
// by position, then index, within the layer (x). Edges are drawn on a canvas (colour and width by
// signed weight, batched into 16 paths per frame, redrawn with requestAnimationFrame; while
// panning only the strongest edges are drawn); nodes are SVG circles with labels above it.
//
// Interaction: wheel zooms about the cursor, dragging the background pans, the slider keeps the
// edges with |weight| >= threshold, hovering an edge shows its weight (nearest edge within 5 px),
// clicking a node opens its connections panel, shift-click pins, double-click a label edits it.

import { type Handle, NEG_RGB, POS_RGB, attrs, esc, exportButtons, fmt, h, makeRoot, makeTip, sizeCanvas, svgEl, svgDoc, svgToPNG } from "./util";

export interface GraphNode {
  id: string;
  layer: number;
  pos?: number | null;
  index?: number | null;
  kind?: string;
  label?: string;
  score?: number | null;
  [extra: string]: unknown;
}
export interface GraphEdge {
  source: string;
  target: string;
  weight: number;
}
export interface GraphData {
  nodes: GraphNode[];
  edges: GraphEdge[];
  title?: string;
  /** Optional token strings, one per position, for the position axis. */
  tokens?: string[];
}
export interface GraphOpts {
  onNode?(node: GraphNode): void;
  onLabel?(node: GraphNode, label: string): void;
  threshold?: number;
  /** Height of the drawing area in CSS pixels (default 560). */
  height?: number;
  exportButtons?: boolean;
}
export interface GraphHandle extends Handle<GraphData> {
  toJSON(): GraphData & { pinned: string[]; threshold: number };
  setThreshold(t: number): void;
  /** The edges kept by the pruning threshold, strongest first. */
  keptEdges(): GraphEdge[];
}

const SX = 30; // node spacing within a layer (world units)
const GAP_MIN = 60; // least distance between layers; fit() stretches it to fill the view's height
const COLGAP = 20; // gap between position columns
const R = 5; // largest node radius in screen pixels
const CULL = 3000; // edges drawn while panning or zooming
const QUICK_NODES = 1500; // above this many nodes, panning draws them as canvas dots
const LEVELS = 8;

const KIND: Record<string, string> = {
  embedding: "#8c8c8c",
  embed: "#8c8c8c",
  input: "#8c8c8c",
  token: "#8c8c8c",
  logit: "#2e8b57",
  logits: "#2e8b57",
  output: "#2e8b57",
  error: "#c8c8c8",
  feature: "#e08a1e",
  transcoder: "#e08a1e",
  latent: "#e08a1e",
  attention: "#3b73b9",
  attn: "#3b73b9",
  head: "#3b73b9",
  mlp: "#8e5fb5",
  neuron: "#8e5fb5",
};
const PALETTE = ["#d6604d", "#4393c3", "#b8860b", "#1b9e77", "#7570b3", "#e7298a"];

function edgeColour(w: number, a: number): string {
  const c = w >= 0 ? POS_RGB : NEG_RGB;
  return `rgba(${c[0]},${c[1]},${c[2]},${a.toFixed(3)})`;
}

interface Model {
  nodes: GraphNode[];
  edges: GraphEdge[];
  labels: string[];
  x: Float64Array;
  y: Float64Array; // level * gap
  level: Float64Array; // layers above the bottom one, counted from the top (0 = top layer)
  src: Int32Array;
  dst: Int32Array;
  w: Float64Array;
  order: Int32Array; // edge indices by |w| descending
  absDesc: Float64Array;
  wmax: number;
  inAdj: number[][];
  outAdj: number[][];
  layers: number[]; // distinct layers, ascending
  columns: Array<{ pos: number | null; centre: number }>;
  colours: string[];
  kinds: Array<[string, string]>;
  index: Map<string, number>;
  data: GraphData;
}

function buildModel(data: GraphData): Model {
  if (!data || !Array.isArray(data.nodes) || !Array.isArray(data.edges)) {
    throw new Error("mechscope.graph: data needs nodes and edges lists");
  }
  const nodes = data.nodes;
  const index = new Map<string, number>();
  nodes.forEach((n, i) => {
    if (!n || n.id === undefined || n.id === null) throw new Error(`mechscope.graph: node ${i} has no id`);
    if (typeof n.layer !== "number" || !Number.isFinite(n.layer)) throw new Error(`mechscope.graph: node ${n.id} has no numeric layer`);
    const id = String(n.id);
    if (index.has(id)) throw new Error(`mechscope.graph: duplicate node id ${JSON.stringify(id)}`);
    index.set(id, i);
  });
  const E = data.edges.length;
  const src = new Int32Array(E);
  const dst = new Int32Array(E);
  const w = new Float64Array(E);
  data.edges.forEach((e, k) => {
    const s = index.get(String(e.source));
    const t = index.get(String(e.target));
    if (s === undefined || t === undefined) {
      throw new Error(`mechscope.graph: edge ${k} (${e.source} -> ${e.target}) names a node that is not in nodes`);
    }
    if (typeof e.weight !== "number" || !Number.isFinite(e.weight)) throw new Error(`mechscope.graph: edge ${k} has no finite weight`);
    src[k] = s;
    dst[k] = t;
    w[k] = e.weight;
  });
  const order = Int32Array.from({ length: E }, (_, k) => k).sort((a, b) => Math.abs(w[b]) - Math.abs(w[a]) || a - b);
  const absDesc = Float64Array.from(order, (k) => Math.abs(w[k]));
  const inAdj: number[][] = nodes.map(() => []);
  const outAdj: number[][] = nodes.map(() => []);
  for (const k of order) {
    outAdj[src[k]].push(k);
    inAdj[dst[k]].push(k);
  }

  // layout: y by layer rank, x by position column then index within the (layer, position) group
  const layers = [...new Set(nodes.map((n) => n.layer))].sort((a, b) => a - b);
  const rank = new Map(layers.map((l, i) => [l, i]));
  const posKey = (n: GraphNode): number | null => (typeof n.pos === "number" ? n.pos : null);
  const positions = [...new Set(nodes.map(posKey))].sort((a, b) => (a === null ? -Infinity : a) - (b === null ? -Infinity : b));
  const groups = new Map<string, number[]>();
  nodes.forEach((n, i) => {
    const key = `${rank.get(n.layer)}|${posKey(n)}`;
    const g = groups.get(key);
    if (g) g.push(i);
    else groups.set(key, [i]);
  });
  const width = new Map<number | null, number>();
  for (const [key, g] of groups) {
    const p = key.split("|")[1];
    const pos = p === "null" ? null : Number(p);
    width.set(pos, Math.max(width.get(pos) ?? 0, g.length * SX));
  }
  const start = new Map<number | null, number>();
  let cursor = 0;
  const columns: Model["columns"] = [];
  for (const p of positions) {
    start.set(p, cursor);
    columns.push({ pos: p, centre: cursor + (width.get(p) ?? 0) / 2 });
    cursor += (width.get(p) ?? 0) + COLGAP;
  }
  const x = new Float64Array(nodes.length);
  const y = new Float64Array(nodes.length);
  const level = new Float64Array(nodes.length);
  for (const [key, g] of groups) {
    g.sort((a, b) => (nodes[a].index ?? Infinity) - (nodes[b].index ?? Infinity) || a - b);
    const [r, p] = key.split("|");
    const pos = p === "null" ? null : Number(p);
    const x0 = (start.get(pos) ?? 0) + ((width.get(pos) ?? 0) - g.length * SX) / 2;
    g.forEach((i, j) => {
      x[i] = x0 + (j + 0.5) * SX;
      level[i] = layers.length - 1 - Number(r);
      y[i] = level[i] * GAP_MIN;
    });
  }
  const kindColour = new Map<string, string>();
  const colours = nodes.map((n) => {
    const k = String(n.kind ?? "node");
    if (!kindColour.has(k)) kindColour.set(k, KIND[k.toLowerCase()] ?? PALETTE[kindColour.size % PALETTE.length]);
    return kindColour.get(k) as string;
  });
  return {
    nodes,
    edges: data.edges,
    labels: nodes.map((n) => String(n.label ?? n.id)),
    x,
    y,
    level,
    src,
    dst,
    w,
    order,
    absDesc,
    wmax: E ? absDesc[0] : 0,
    inAdj,
    outAdj,
    layers,
    columns,
    colours,
    kinds: [...kindColour],
    index,
    data,
  };
}

/** Number of edges with |w| >= t (absDesc is sorted descending). */
function keptCount(absDesc: Float64Array, t: number): number {
  let lo = 0;
  let hi = absDesc.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (absDesc[mid] >= t) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function truncate(s: string, n: number): string {
  return s.length <= n ? s : `${s.slice(0, Math.max(1, n - 1))}…`;
}

export function graph(el: HTMLElement, data: GraphData, opts: GraphOpts = {}): GraphHandle {
  const root = makeRoot(el, "graph");
  let m = buildModel(data);
  let threshold = Math.max(0, opts.threshold ?? 0);
  let kept = 0;
  let pinned = new Set<string>();
  let selected = -1;
  let hoverNode = -1;
  let hoverEdge = -1;
  const view = { k: 1, tx: 0, ty: 0 };
  let W = 800;
  const H = opts.height ?? 560;
  let raf = 0;
  let interacting = false;
  let settleTimer: ReturnType<typeof setTimeout> | undefined;
  let labelBudget = -1;
  let gap = GAP_MIN;
  let alive = true;

  // ---- DOM -------------------------------------------------------------------------------
  const bar = h("div", "ms-g-bar", root);
  const title = h("span", "ms-title", bar);
  const pruneLabel = h("label", "ms-g-prune", bar, "prune ");
  const slider = h("input", "ms-g-slider", pruneLabel);
  slider.type = "range";
  slider.min = "0";
  slider.step = "1";
  const countEl = h("span", "ms-g-count", bar);
  const fitBtn = h("button", "", bar, "fit");
  fitBtn.type = "button";
  fitBtn.title = "fit the graph in view";
  const legend = h("span", "ms-g-legend", bar);
  const stage = h("div", "ms-g-stage", root);
  stage.style.height = `${H}px`;
  const canvas = h("canvas", "ms-g-edges", stage);
  const svg = svgEl("svg", { class: "ms-g-svg" }, stage) as SVGSVGElement;
  const viewG = svgEl("g", { class: "ms-g-view" }, svg);
  const panel = h("div", "ms-panel", stage);
  panel.hidden = true;
  const editor = h("input", "ms-g-edit", stage);
  editor.hidden = true;
  const tip = makeTip(root);
  let ctx = sizeCanvas(canvas, W, H);
  let circles: SVGElement[] = [];
  let texts: SVGElement[] = [];

  const build = (): void => {
    viewG.textContent = "";
    const nodesG = svgEl("g", { class: "ms-g-nodes" }, viewG);
    const labelsG = svgEl("g", { class: "ms-g-labels" }, viewG);
    circles = m.nodes.map((n, i) => {
      const c = svgEl("circle", { cx: m.x[i], cy: m.y[i], r: R, fill: m.colours[i], "data-i": i }, nodesG);
      c.setAttribute("data-id", String(n.id));
      if (String(n.kind ?? "").toLowerCase() === "error") c.classList.add("ms-error-node");
      return c;
    });
    texts = m.nodes.map((_, i) => {
      const t = svgEl("text", { x: m.x[i], y: m.y[i], dy: "-0.9em", "text-anchor": "middle", "data-i": i }, labelsG);
      t.textContent = m.labels[i];
      return t;
    });
    title.textContent = m.data.title ?? "";
    legend.textContent = "";
    for (const [k, c] of m.kinds) {
      const item = h("span", "ms-g-kind", legend, k);
      item.style.setProperty("--ms-kind", c);
    }
    slider.max = String(Math.max(0, m.edges.length - 1));
    root.setAttribute("data-nodes", String(m.nodes.length));
    root.setAttribute("data-edges", String(m.edges.length));
    labelBudget = -1;
    applyThreshold(threshold);
    applyPins();
  };

  // ---- threshold and pins ----------------------------------------------------------------
  const applyThreshold = (t: number): void => {
    threshold = Math.max(0, t);
    kept = keptCount(m.absDesc, threshold);
    const E = m.edges.length;
    slider.value = String(Math.min(Math.max(0, E - kept), Math.max(0, E - 1)));
    root.setAttribute("data-threshold", String(threshold));
    root.setAttribute("data-kept", String(kept));
    countEl.textContent = `|w| ≥ ${fmt(threshold)} · ${kept.toLocaleString("en-US")} of ${E.toLocaleString("en-US")} edges`;
    const degree = new Uint32Array(m.nodes.length);
    for (let i = 0; i < kept; i++) {
      const k = m.order[i];
      degree[m.src[k]]++;
      degree[m.dst[k]]++;
    }
    circles.forEach((c, i) => c.classList.toggle("ms-faded", degree[i] === 0 && E > 0));
    if (selected >= 0) showPanel(selected);
    schedule();
  };

  const applyPins = (): void => {
    circles.forEach((c, i) => {
      const on = pinned.has(String(m.nodes[i].id));
      c.classList.toggle("ms-pinned", on);
      texts[i].classList.toggle("ms-show", on || i === selected);
    });
    root.setAttribute("data-pinned", JSON.stringify([...pinned].sort()));
  };

  const nodeCopy = (i: number): GraphNode => ({ ...m.nodes[i], label: m.labels[i] });

  // ---- panel -------------------------------------------------------------------------------
  const showPanel = (i: number): void => {
    panel.textContent = "";
    panel.hidden = false;
    panel.setAttribute("data-node", String(m.nodes[i].id));
    const head = h("div", "ms-panel-head", panel);
    h("strong", "", head, m.labels[i]);
    const close = h("button", "ms-close", head, "×");
    close.type = "button";
    close.title = "close";
    close.onclick = () => select(-1);
    const n = m.nodes[i];
    const dl = h("dl", "", panel);
    const fields: Array<[string, unknown]> = [
      ["id", n.id],
      ["kind", n.kind],
      ["layer", n.layer],
      ["pos", n.pos],
      ["index", n.index],
      ["label", m.labels[i]],
      ["score", typeof n.score === "number" ? fmt(n.score) : n.score],
    ];
    for (const [k, v] of fields) {
      if (v === undefined || v === null) continue;
      h("dt", "", dl, k);
      h("dd", `ms-f-${k}`, dl, String(v));
    }
    const edit = h("button", "", panel, "edit label");
    edit.type = "button";
    edit.onclick = () => startEdit(i);
    const list = (name: string, adj: number[], other: (k: number) => number): void => {
      const keep = adj.filter((k) => Math.abs(m.w[k]) >= threshold);
      h("div", "ms-panel-sec", panel, `${name} (${keep.length}${keep.length !== adj.length ? ` of ${adj.length}` : ""})`);
      const ul = h("ul", `ms-conns ms-${name}`, panel);
      for (const k of keep.slice(0, 200)) {
        const j = other(k);
        const li = h("li", "ms-conn", ul);
        li.setAttribute("data-node", String(m.nodes[j].id));
        li.setAttribute("data-weight", String(m.w[k]));
        const sw = h("span", "ms-swatch", li);
        sw.style.background = edgeColour(m.w[k], 1);
        h("span", "", li, `${m.labels[j]} `);
        h("span", "ms-num", li, fmt(m.w[k]));
        li.title = `${m.nodes[j].id}: ${m.w[k]}`;
        li.onclick = () => select(j);
      }
      if (keep.length > 200) h("li", "ms-sub", ul, `… ${keep.length - 200} more`);
    };
    list("incoming", m.inAdj[i], (k) => m.src[k]);
    list("outgoing", m.outAdj[i], (k) => m.dst[k]);
  };

  const select = (i: number): void => {
    if (selected >= 0 && circles[selected]) circles[selected].classList.remove("ms-selected");
    selected = i;
    if (i < 0) {
      panel.hidden = true;
      root.removeAttribute("data-selected");
    } else {
      circles[i].classList.add("ms-selected");
      root.setAttribute("data-selected", String(m.nodes[i].id));
      showPanel(i);
      opts.onNode?.(nodeCopy(i));
    }
    applyPins();
    schedule();
  };

  // ---- label editing -------------------------------------------------------------------------
  const startEdit = (i: number): void => {
    editor.hidden = false;
    editor.value = m.labels[i];
    const sx = m.x[i] * view.k + view.tx;
    const sy = m.y[i] * view.k + view.ty;
    editor.style.left = `${Math.max(0, Math.min(W - 180, sx - 90))}px`;
    editor.style.top = `${Math.max(0, Math.min(H - 26, sy - 30))}px`;
    editor.setAttribute("data-node", String(m.nodes[i].id));
    let done = false;
    const finish = (commit: boolean): void => {
      if (done) return;
      done = true;
      editor.hidden = true;
      editor.onkeydown = editor.onblur = null;
      if (!commit || editor.value === m.labels[i]) return;
      m.labels[i] = editor.value;
      texts[i].textContent = labelBudget >= 3 ? truncate(editor.value, labelBudget) : editor.value;
      if (selected === i) showPanel(i);
      opts.onLabel?.(nodeCopy(i), editor.value);
    };
    editor.onkeydown = (e) => {
      if (e.key === "Enter") finish(true);
      else if (e.key === "Escape") finish(false);
    };
    editor.onblur = () => finish(true);
    editor.focus();
    editor.select();
  };

  // ---- drawing --------------------------------------------------------------------------------
  /** Sets the distance between layers (world units) and moves the nodes to it. */
  const relayout = (g: number): void => {
    if (g === gap) return;
    gap = g;
    for (let i = 0; i < m.nodes.length; i++) {
      m.y[i] = m.level[i] * gap;
      circles[i].setAttribute("cy", String(m.y[i]));
      texts[i].setAttribute("y", String(m.y[i]));
    }
  };

  /** Fits the graph in view: x by the widest layer, then the layer gap stretched to fill the height. */
  const fit = (): void => {
    let x0 = Infinity;
    let x1 = -Infinity;
    for (let i = 0; i < m.nodes.length; i++) {
      x0 = Math.min(x0, m.x[i]);
      x1 = Math.max(x1, m.x[i]);
    }
    if (!Number.isFinite(x0)) x0 = x1 = 0;
    const pad = 36;
    const levels = Math.max(1, m.layers.length - 1);
    const kx = Math.min(2.5, (W - 2 * pad) / Math.max(1, x1 - x0));
    relayout(Math.max(GAP_MIN, (H - 2 * pad) / levels / kx));
    view.k = Math.min(kx, (H - 2 * pad) / (levels * gap));
    view.tx = (W - (x1 + x0) * view.k) / 2;
    view.ty = (H - (m.layers.length > 1 ? levels * gap : 0) * view.k) / 2;
    schedule();
  };

  const drawEdges = (): void => {
    const { k, tx, ty } = view;
    ctx.clearRect(0, 0, W, H);
    const limit = interacting ? Math.min(kept, CULL) : kept;
    const focus = hoverNode >= 0 ? hoverNode : selected;
    const paths: Path2D[] = Array.from({ length: 2 * LEVELS }, () => new Path2D());
    const wscale = Math.max(0.6, Math.min(2, Math.sqrt(k)));
    for (let i = 0; i < limit; i++) {
      const e = m.order[i];
      const x1 = m.x[m.src[e]] * k + tx;
      const y1 = m.y[m.src[e]] * k + ty;
      const x2 = m.x[m.dst[e]] * k + tx;
      const y2 = m.y[m.dst[e]] * k + ty;
      if ((x1 < 0 && x2 < 0) || (x1 > W && x2 > W) || (y1 < 0 && y2 < 0) || (y1 > H && y2 > H)) continue;
      const lvl = Math.min(LEVELS - 1, Math.floor((LEVELS * Math.abs(m.w[e])) / (m.wmax || 1)));
      const p = paths[(m.w[e] >= 0 ? 0 : LEVELS) + lvl];
      p.moveTo(x1, y1);
      p.lineTo(x2, y2);
    }
    ctx.globalAlpha = focus >= 0 ? 0.35 : 1;
    for (let l = 0; l < LEVELS; l++) {
      // weak edges faint and thin, strong ones drawn last (on top); both signs at each level
      const f = (l + 1) / LEVELS;
      for (let s = 0; s < 2; s++) {
        ctx.strokeStyle = edgeColour(s === 0 ? 1 : -1, 0.1 + 0.85 * f * f);
        ctx.lineWidth = (0.4 + 3 * f) * wscale;
        ctx.stroke(paths[s * LEVELS + l]);
      }
    }
    ctx.globalAlpha = 1;
    const emphasise = (e: number): void => {
      ctx.strokeStyle = edgeColour(m.w[e], 0.95);
      ctx.lineWidth = (1.5 + (3 * Math.abs(m.w[e])) / (m.wmax || 1)) * wscale;
      ctx.beginPath();
      ctx.moveTo(m.x[m.src[e]] * k + tx, m.y[m.src[e]] * k + ty);
      ctx.lineTo(m.x[m.dst[e]] * k + tx, m.y[m.dst[e]] * k + ty);
      ctx.stroke();
    };
    if (focus >= 0) {
      for (const e of m.inAdj[focus]) if (Math.abs(m.w[e]) >= threshold) emphasise(e);
      for (const e of m.outAdj[focus]) if (Math.abs(m.w[e]) >= threshold) emphasise(e);
    }
    if (hoverEdge >= 0) emphasise(hoverEdge);
    // axes: layers on the left, positions at the bottom
    ctx.fillStyle = "#777";
    ctx.font = "10px system-ui, sans-serif";
    ctx.textAlign = "left";
    m.layers.forEach((l, r) => {
      const y = (m.layers.length - 1 - r) * gap * k + ty;
      if (y > 0 && y < H) ctx.fillText(`L${l}`, 4, y + 3);
    });
    ctx.textAlign = "center";
    let lastEnd = -Infinity;
    for (const c of m.columns) {
      if (c.pos === null) continue;
      const x = c.centre * k + tx;
      const text = truncate(m.data.tokens?.[c.pos] ?? `pos ${c.pos}`, 14);
      const w = ctx.measureText(text).width;
      if (x - w / 2 < lastEnd + 6 || x < 0 || x > W) continue;
      ctx.fillText(text, x, H - 6);
      lastEnd = x + w / 2;
    }
  };

  // While panning or zooming a large graph, the nodes are drawn as dots on the canvas and the
  // SVG is hidden: repainting thousands of SVG circles per frame is what would make it lag.
  const drawDots = (r: number): void => {
    const { k, tx, ty } = view;
    const byColour = new Map<string, Path2D>();
    for (let i = 0; i < m.nodes.length; i++) {
      const x = m.x[i] * k + tx;
      const y = m.y[i] * k + ty;
      if (x < -r || x > W + r || y < -r || y > H + r) continue;
      let p = byColour.get(m.colours[i]);
      if (!p) byColour.set(m.colours[i], (p = new Path2D()));
      p.moveTo(x + r, y);
      p.arc(x, y, r, 0, 2 * Math.PI);
    }
    for (const [c, p] of byColour) {
      ctx.fillStyle = c;
      ctx.fill(p);
    }
  };

  const frame = (): void => {
    raf = 0;
    if (!alive) return;
    // radius in screen pixels: R, smaller when nodes crowd (zoomed out)
    const r = Math.max(1.5, Math.min(R, 0.4 * SX * view.k));
    const quick = interacting && m.nodes.length > QUICK_NODES;
    svg.style.visibility = quick ? "hidden" : "";
    if (!quick) {
      // (left alone while hidden: a new transform or radius would restyle every node)
      viewG.setAttribute("transform", `translate(${view.tx},${view.ty}) scale(${view.k})`);
      viewG.style.setProperty("--ms-r", `${r / view.k}px`);
      viewG.setAttribute("font-size", String(10 / view.k));
    }
    drawEdges();
    if (quick) drawDots(r);
  };

  const schedule = (): void => {
    if (!raf && alive) raf = requestAnimationFrame(frame);
  };

  const settleLabels = (): void => {
    const budget = Math.floor((SX * view.k) / 6);
    svg.classList.toggle("ms-nolabels", budget < 3);
    if (budget === labelBudget || budget < 3) return;
    labelBudget = budget;
    texts.forEach((t, i) => {
      t.textContent = truncate(m.labels[i], budget);
    });
  };

  const interact = (): void => {
    interacting = true;
    clearTimeout(settleTimer);
    settleTimer = setTimeout(() => {
      interacting = false;
      settleLabels();
      schedule();
    }, 150);
    schedule();
  };

  // ---- events ----------------------------------------------------------------------------------
  const nodeOf = (t: EventTarget | null): number => {
    const d = t instanceof Element ? t.getAttribute("data-i") : null;
    return d === null ? -1 : Number(d);
  };
  let drag: { x: number; y: number; moved: boolean } | null = null;
  let lastDragMoved = false;

  const nearestEdge = (px: number, py: number): number => {
    const { k, tx, ty } = view;
    let best = -1;
    let bestD = 25; // 5 px squared
    for (let i = 0; i < kept; i++) {
      const e = m.order[i];
      const x1 = m.x[m.src[e]] * k + tx;
      const y1 = m.y[m.src[e]] * k + ty;
      const dx = m.x[m.dst[e]] * k + tx - x1;
      const dy = m.y[m.dst[e]] * k + ty - y1;
      const len = dx * dx + dy * dy;
      const u = len > 0 ? Math.max(0, Math.min(1, ((px - x1) * dx + (py - y1) * dy) / len)) : 0;
      const ex = x1 + u * dx - px;
      const ey = y1 + u * dy - py;
      const d = ex * ex + ey * ey;
      if (d < bestD) {
        bestD = d;
        best = e;
      }
    }
    return best;
  };

  const hover = (e: PointerEvent): void => {
    const i = nodeOf(e.target);
    const box = stage.getBoundingClientRect();
    const prevNode = hoverNode;
    const prevEdge = hoverEdge;
    hoverNode = i;
    hoverEdge = i >= 0 ? -1 : nearestEdge(e.clientX - box.left, e.clientY - box.top);
    tip.el.removeAttribute("data-source");
    tip.el.removeAttribute("data-target");
    tip.el.removeAttribute("data-weight");
    if (i >= 0) {
      const n = m.nodes[i];
      const where = [`kind ${n.kind ?? "?"}`, `layer ${n.layer}`];
      if (n.pos !== undefined && n.pos !== null) where.push(`pos ${n.pos}`);
      const lines = [m.labels[i], `${n.id} · ${where.join(" · ")}`];
      if (typeof n.score === "number") lines.push(`score ${fmt(n.score)}`);
      tip.show(e.clientX, e.clientY, lines);
    } else if (hoverEdge >= 0) {
      const k = hoverEdge;
      tip.show(e.clientX, e.clientY, [`${m.labels[m.src[k]]} → ${m.labels[m.dst[k]]}`, `weight ${fmt(m.w[k])}`]);
      tip.el.setAttribute("data-source", String(m.nodes[m.src[k]].id));
      tip.el.setAttribute("data-target", String(m.nodes[m.dst[k]].id));
      tip.el.setAttribute("data-weight", String(m.w[k]));
    } else tip.hide();
    if (prevNode !== hoverNode || prevEdge !== hoverEdge) schedule();
  };

  stage.addEventListener("pointerdown", (e) => {
    if (e.button !== 0 || nodeOf(e.target) >= 0 || panel.contains(e.target as Node) || e.target === editor) return;
    drag = { x: e.clientX, y: e.clientY, moved: false };
    stage.setPointerCapture(e.pointerId);
  });
  stage.addEventListener("pointermove", (e) => {
    if (drag) {
      const dx = e.clientX - drag.x;
      const dy = e.clientY - drag.y;
      if (!drag.moved && Math.abs(dx) + Math.abs(dy) < 3) return;
      drag.moved = true;
      drag.x = e.clientX;
      drag.y = e.clientY;
      view.tx += dx;
      view.ty += dy;
      tip.hide();
      interact();
    } else if (!panel.contains(e.target as Node)) hover(e);
  });
  const endDrag = (e: PointerEvent): void => {
    if (!drag) return;
    lastDragMoved = drag.moved;
    drag = null;
    if (stage.hasPointerCapture(e.pointerId)) stage.releasePointerCapture(e.pointerId);
  };
  stage.addEventListener("pointerup", endDrag);
  stage.addEventListener("pointercancel", endDrag);
  stage.addEventListener("pointerleave", () => {
    if (drag) return;
    tip.hide();
    if (hoverNode >= 0 || hoverEdge >= 0) {
      hoverNode = hoverEdge = -1;
      schedule();
    }
  });
  stage.addEventListener(
    "wheel",
    (e) => {
      e.preventDefault();
      const box = stage.getBoundingClientRect();
      const mx = e.clientX - box.left;
      const my = e.clientY - box.top;
      const dy = e.deltaMode === 1 ? e.deltaY * 16 : e.deltaY;
      const k = Math.max(0.005, Math.min(40, view.k * Math.exp(-dy * 0.0015)));
      view.tx = mx - ((mx - view.tx) * k) / view.k;
      view.ty = my - ((my - view.ty) * k) / view.k;
      view.k = k;
      tip.hide();
      interact();
    },
    { passive: false },
  );
  // on the stage: after a press on the background the stage holds the pointer capture
  stage.addEventListener("click", (e) => {
    if (panel.contains(e.target as Node) || e.target === editor) return;
    const i = nodeOf(e.target);
    if (i < 0) {
      if (!lastDragMoved && selected >= 0) select(-1);
      lastDragMoved = false;
      return;
    }
    if (e.shiftKey) {
      const id = String(m.nodes[i].id);
      if (pinned.has(id)) pinned.delete(id);
      else pinned.add(id);
      applyPins();
    } else select(i);
  });
  stage.addEventListener("dblclick", (e) => {
    const i = nodeOf(e.target);
    if (i >= 0) {
      e.preventDefault();
      startEdit(i);
    }
  });
  slider.addEventListener("input", () => {
    const v = Number(slider.value);
    const E = m.edges.length;
    applyThreshold(E ? m.absDesc[E - 1 - v] : 0);
  });
  fitBtn.addEventListener("click", () => {
    fit();
    settleLabels();
  });
  const resize = (): void => {
    const w = Math.max(200, Math.floor(stage.clientWidth || 800));
    if (w === W && canvas.width > 1) return;
    W = w;
    ctx = sizeCanvas(canvas, W, H);
    svg.setAttribute("width", String(W));
    svg.setAttribute("height", String(H));
    schedule();
  };
  const observer = typeof ResizeObserver !== "undefined" ? new ResizeObserver(resize) : null;
  observer?.observe(stage);
  if (opts.exportButtons !== false) exportButtons(root, "graph", () => handle);

  // ---- export ------------------------------------------------------------------------------------
  const toSVG = (): string => {
    // wider than the screen layout, so that labels of about 13 characters fit side by side
    const XS = 2.5;
    const gy = Math.max(gap, 90);
    const pad = 40;
    let x0 = Infinity;
    let x1 = -Infinity;
    for (let i = 0; i < m.nodes.length; i++) {
      x0 = Math.min(x0, m.x[i] * XS);
      x1 = Math.max(x1, m.x[i] * XS);
    }
    if (!Number.isFinite(x0)) x0 = x1 = 0;
    const top = pad + (m.data.title ? 24 : 0);
    const X = (i: number): string => (m.x[i] * XS - x0 + pad).toFixed(1);
    const Y = (i: number): string => (m.level[i] * gy + top).toFixed(1);
    const parts: string[] = [];
    if (m.data.title) parts.push(`<text x="8" y="16" font-size="13" font-weight="600">${esc(m.data.title)}</text>`);
    for (let i = kept - 1; i >= 0; i--) {
      const e = m.order[i];
      const a = Math.abs(m.w[e]) / (m.wmax || 1);
      parts.push(
        `<line${attrs({
          class: "ms-edge",
          "data-source": String(m.nodes[m.src[e]].id),
          "data-target": String(m.nodes[m.dst[e]].id),
          "data-weight": String(m.w[e]),
          x1: X(m.src[e]),
          y1: Y(m.src[e]),
          x2: X(m.dst[e]),
          y2: Y(m.dst[e]),
          stroke: edgeColour(m.w[e], 0.15 + 0.8 * a * a),
          "stroke-width": (0.4 + 3 * a).toFixed(2),
        })}/>`,
      );
    }
    m.nodes.forEach((n, i) => {
      const pin = pinned.has(String(n.id));
      parts.push(
        `<circle${attrs({ class: "ms-node", "data-id": String(n.id), cx: X(i), cy: Y(i), r: R, fill: m.colours[i], stroke: pin ? "#d4a017" : "#333", "stroke-width": pin ? 2 : 0.6 })}/>`,
        `<text${attrs({ x: X(i), y: (Number(Y(i)) - 8).toFixed(1), "text-anchor": "middle", "font-size": 9 })}>${esc(truncate(m.labels[i], 13))}<title>${esc(m.labels[i])}</title></text>`,
      );
    });
    const levels = Math.max(0, m.layers.length - 1);
    return svgDoc(x1 - x0 + 2 * pad, levels * gy + top + pad, parts.join(""));
  };

  const handle: GraphHandle = {
    update(d) {
      m = buildModel(d);
      gap = GAP_MIN;
      pinned = new Set([...pinned].filter((id) => m.index.has(id)));
      selected = hoverNode = hoverEdge = -1;
      panel.hidden = true;
      root.removeAttribute("data-selected");
      build();
      fit();
      settleLabels();
    },
    destroy() {
      alive = false;
      if (raf) cancelAnimationFrame(raf);
      clearTimeout(settleTimer);
      observer?.disconnect();
      root.remove();
    },
    toSVG,
    toPNG: () => svgToPNG(toSVG()),
    toJSON() {
      const out: GraphData & { pinned: string[]; threshold: number } = {
        nodes: m.nodes.map((_, i) => nodeCopy(i)),
        edges: m.edges.map((e) => ({ ...e })),
        pinned: [...pinned].sort(),
        threshold,
      };
      if (m.data.title !== undefined) out.title = m.data.title;
      if (m.data.tokens !== undefined) out.tokens = [...m.data.tokens];
      return out;
    },
    setThreshold: applyThreshold,
    keptEdges: () => Array.from(m.order.subarray(0, kept), (k) => ({ ...m.edges[k] })),
  };
  resize();
  build();
  fit();
  settleLabels();
  return handle;
}
