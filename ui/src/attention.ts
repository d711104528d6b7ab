// Attention patterns [heads, q, k]: a grid of per-head thumbnails and one large pattern of the
// selected head. Hovering a query token (its row label, or any cell of its row) highlights that
// row and shades the key tokens by the weight it puts on them (circuitsvis #98 lost this).

import { decodeTensor, type TensorLike } from "./tensor";
import {
  type Handle,
  attrs,
  esc,
  exportButtons,
  fmt,
  h,
  labels,
  makeRoot,
  makeTip,
  measurer,
  paintMatrix,
  rgb,
  sequential,
  sizeCanvas,
  svgDoc,
  svgToPNG,
  visible,
} from "./util";

export interface AttentionData {
  tokens: string[];
  patterns: TensorLike;
  layer?: number;
  heads?: string[];
}

export interface AttentionOpts {
  head?: number;
  /** Thumbnail size in CSS pixels (default 72). */
  thumb?: number;
  exportButtons?: boolean;
}

interface State {
  heads: number;
  n: number;
  values: Float32Array;
  tokens: string[];
  headNames: string[];
  data: AttentionData;
}

function prepare(data: AttentionData): State {
  if (!data || data.patterns === undefined || !Array.isArray(data.tokens)) {
    throw new Error("mechscope.attention: data needs tokens and patterns");
  }
  const t = decodeTensor(data.patterns);
  if (t.shape.length !== 3 || t.shape[1] !== t.shape[2] || t.shape[1] !== data.tokens.length) {
    throw new Error(
      `mechscope.attention: patterns must be [heads, q, k] with q = k = ${data.tokens.length} tokens, got shape [${t.shape}]`,
    );
  }
  const layer = data.layer === undefined ? "" : `L${data.layer}`;
  const names = data.heads ?? Array.from({ length: t.shape[0] }, (_, i) => `${layer}H${i}`);
  return {
    heads: t.shape[0],
    n: t.shape[1],
    values: t.values,
    tokens: data.tokens.map(String),
    headNames: labels(names, t.shape[0], "heads", "attention"),
    data,
  };
}

export function attention(el: HTMLElement, data: AttentionData, opts: AttentionOpts = {}): Handle<AttentionData> {
  const root = makeRoot(el, "attention");
  let st = prepare(data);
  let head = Math.min(Math.max(0, opts.head ?? 0), Math.max(0, st.heads - 1));

  const draw = (): void => {
    root.textContent = "";
    const { n, values } = st;
    const cell = Math.max(4, Math.min(24, Math.floor(480 / Math.max(n, 1))));
    const thumbPx = opts.thumb ?? 72;
    const layer = st.data.layer === undefined ? "" : `layer ${st.data.layer} · `;
    const title = h("div", "ms-title", root);
    const thumbs = h("div", "ms-at-thumbs", root);
    const thumbEls = st.headNames.map((name, i) => {
      const b = h("button", "ms-thumb", thumbs);
      b.type = "button";
      b.setAttribute("data-head", String(i));
      b.title = `show ${name}`;
      const c = h("canvas", "", b);
      paintMatrix(sizeCanvas(c, thumbPx, thumbPx), values, i * n * n, n, n, sequential, thumbPx, thumbPx);
      h("span", "", b, name);
      b.addEventListener("click", () => select(i));
      return b;
    });

    const main = h("div", "ms-at-main", root);
    h("div", "", main);
    const keyBox = h("div", "ms-hm-cols", main);
    const queryBox = h("div", "ms-hm-rows ms-at-queries", main);
    const stage = h("div", "ms-at-stage", main);
    const canvas = h("canvas", "ms-hm-canvas", stage);
    const mark = h("div", "ms-at-row", stage);
    mark.hidden = true;
    mark.style.height = `${cell}px`;
    mark.style.width = `${n * cell}px`;
    const font = `${Math.max(8, Math.min(11, cell - 1))}px`;
    const every = Math.max(1, Math.ceil(10 / cell));
    const queryEls = st.tokens.map((t, q) => {
      const d = h("div", "ms-lab ms-at-q", queryBox, q % every === 0 ? visible(t) : "");
      d.setAttribute("data-q", String(q));
      d.style.height = `${cell}px`;
      d.style.lineHeight = `${cell}px`;
      d.style.fontSize = font;
      d.title = `query ${q}: ${visible(t)}`;
      d.addEventListener("mouseenter", () => setQuery(q));
      return d;
    });
    st.tokens.forEach((t, k) => {
      const d = h("div", "ms-lab ms-vert", keyBox, k % every === 0 ? visible(t) : "");
      d.style.width = `${cell}px`;
      d.style.lineHeight = `${cell}px`;
      d.style.fontSize = font;
      d.title = `key ${k}: ${visible(t)}`;
    });
    const ctx = sizeCanvas(canvas, n * cell, n * cell);
    const strip = h("div", "ms-at-strip", root);
    const stripHead = h("div", "ms-sub", strip, "hover a query token to see the keys it attends to");
    const keyEls = st.tokens.map((t, k) => {
      const s = h("span", "ms-tk", strip, visible(t));
      s.setAttribute("data-k", String(k));
      return s;
    });
    const tip = makeTip(root);

    let query = -1;
    const paint = (): void => {
      paintMatrix(ctx, values, head * n * n, n, n, sequential, n * cell, n * cell);
      thumbEls.forEach((b, i) => b.classList.toggle("ms-selected", i === head));
      root.setAttribute("data-head", String(head));
      title.textContent = `${layer}${st.headNames[head]} · ${n} tokens`;
      if (query >= 0) setQuery(query);
    };
    const setQuery = (q: number): void => {
      if (query >= 0 && queryEls[query]) queryEls[query].classList.remove("ms-active");
      query = q;
      if (q < 0) {
        root.removeAttribute("data-query");
        mark.hidden = true;
        stripHead.textContent = "hover a query token to see the keys it attends to";
        keyEls.forEach((s) => {
          s.style.background = "";
          s.removeAttribute("data-weight");
          s.classList.remove("ms-dark");
        });
        return;
      }
      root.setAttribute("data-query", String(q));
      queryEls[q].classList.add("ms-active");
      mark.hidden = false;
      mark.style.top = `${q * cell}px`;
      stripHead.textContent = `${st.headNames[head]}: query ${q} (${visible(st.tokens[q])}) attends to`;
      const base = head * n * n + q * n;
      let rowMax = 0;
      for (let k = 0; k < n; k++) rowMax = Math.max(rowMax, values[base + k] || 0);
      keyEls.forEach((s, k) => {
        const w = values[base + k];
        const a = rowMax > 0 && w > 0 ? w / rowMax : 0;
        s.style.background = `rgba(33,102,172,${a.toFixed(3)})`;
        s.classList.toggle("ms-dark", a > 0.6);
        s.setAttribute("data-weight", String(w));
        s.title = `key ${k}: ${fmt(w)}`;
      });
    };
    const select = (i: number): void => {
      head = i;
      paint();
    };
    canvas.addEventListener("mousemove", (e) => {
      const box = canvas.getBoundingClientRect();
      const k = Math.floor(((e.clientX - box.left) / box.width) * n);
      const q = Math.floor(((e.clientY - box.top) / box.height) * n);
      if (q < 0 || q >= n || k < 0 || k >= n) return tip.hide();
      if (q !== query) setQuery(q);
      const w = values[head * n * n + q * n + k];
      tip.show(e.clientX, e.clientY, [`${visible(st.tokens[q])} → ${visible(st.tokens[k])}`, `query ${q}, key ${k}: ${fmt(w)}`]);
      tip.el.setAttribute("data-q", String(q));
      tip.el.setAttribute("data-k", String(k));
      tip.el.setAttribute("data-value", String(w));
    });
    main.addEventListener("mouseleave", () => {
      tip.hide();
      setQuery(-1);
    });
    paint();
    if (opts.exportButtons !== false) exportButtons(root, "attention", () => handle);
  };

  const toSVG = (): string => {
    const { n, values } = st;
    const cell = Math.max(10, Math.min(24, Math.floor(480 / Math.max(n, 1))));
    const measure = measurer(10);
    const widest = Math.max(0, ...st.tokens.map((t) => measure(visible(t))));
    const left = widest + 10;
    const top = 26 + widest + 6;
    const parts: string[] = [];
    const layer = st.data.layer === undefined ? "" : `layer ${st.data.layer} · `;
    parts.push(`<text x="4" y="16" font-size="13" font-weight="600">${esc(layer + st.headNames[head])}</text>`);
    for (let q = 0; q < n; q++) {
      for (let k = 0; k < n; k++) {
        const w = values[head * n * n + q * n + k];
        parts.push(
          `<rect${attrs({ class: "ms-cell", x: left + k * cell, y: top + q * cell, width: cell, height: cell, fill: rgb(sequential(w)), "data-value": String(w) })}/>`,
        );
      }
    }
    st.tokens.forEach((t, i) => {
      parts.push(`<text x="${left - 4}" y="${top + (i + 0.5) * cell + 3}" text-anchor="end" font-size="10">${esc(visible(t))}</text>`);
      parts.push(
        `<text transform="translate(${left + (i + 0.5) * cell + 3},${top - 4}) rotate(-90)" font-size="10">${esc(visible(t))}</text>`,
      );
    });
    return svgDoc(left + n * cell + 8, top + n * cell + 8, parts.join(""));
  };

  const handle: Handle<AttentionData> = {
    update(d) {
      st = prepare(d);
      head = Math.min(head, st.heads - 1);
      draw();
    },
    destroy() {
      root.remove();
    },
    toSVG,
    toPNG: () => svgToPNG(toSVG()),
  };
  draw();
  return handle;
}
