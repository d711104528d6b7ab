// Heat map of a [rows, cols] tensor on a canvas: diverging scale centred at 0 with symmetric
// limits ±max|v| (NaN grey), axis labels, a colour bar, a hover tooltip and cell clicks.

import { decodeTensor, type TensorLike } from "./tensor";
import {
  type Handle,
  attrs,
  diverging,
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
  sizeCanvas,
  svgDoc,
  svgToPNG,
} from "./util";

export interface HeatmapData {
  values: TensorLike;
  rows?: string[];
  cols?: string[];
  title?: string;
  metric?: string;
  note?: string;
  hover?: string[][];
}

export interface HeatmapOpts {
  onCell?(row: number, col: number): void;
  /** Fixed colour limit (e.g. to compare two runs side by side); default max |v|. */
  vmax?: number;
  /** Cell size in CSS pixels; default fits about 640 x 480. */
  cell?: number;
  exportButtons?: boolean;
}

interface State {
  rows: number;
  cols: number;
  values: Float32Array;
  rowLabels: string[];
  colLabels: string[];
  vmax: number;
  cell: number;
  data: HeatmapData;
}

function prepare(data: HeatmapData, opts: HeatmapOpts): State {
  if (!data || data.values === undefined) throw new Error("mechscope.heatmap: data.values is required");
  const t = decodeTensor(data.values);
  if (t.shape.length !== 2) throw new Error(`mechscope.heatmap: values must be 2-D [rows, cols], got shape [${t.shape}]`);
  const [rows, cols] = t.shape;
  let vmax = 0;
  for (const v of t.values) if (Math.abs(v) > vmax) vmax = Math.abs(v);
  if (opts.vmax !== undefined) vmax = opts.vmax;
  const cell = opts.cell ?? Math.max(2, Math.min(32, Math.floor(Math.min(640 / Math.max(cols, 1), 480 / Math.max(rows, 1)))));
  return {
    rows,
    cols,
    values: t.values,
    rowLabels: labels(data.rows, rows, "rows", "heatmap"),
    colLabels: labels(data.cols, cols, "cols", "heatmap"),
    vmax,
    cell,
    data,
  };
}

export function heatmap(el: HTMLElement, data: HeatmapData, opts: HeatmapOpts = {}): Handle<HeatmapData> {
  const root = makeRoot(el, "heatmap");
  let st = prepare(data, opts);

  const draw = (): void => {
    root.textContent = "";
    const { rows, cols, cell, vmax } = st;
    root.setAttribute("data-vmax", String(vmax));
    root.setAttribute("data-rows", String(rows));
    root.setAttribute("data-cols", String(cols));
    if (st.data.title) h("div", "ms-title", root, st.data.title);
    if (st.data.metric) h("div", "ms-sub", root, `metric: ${st.data.metric}`);
    const body = h("div", "ms-hm-body", root);
    h("div", "", body);
    const colBox = h("div", "ms-hm-cols", body);
    h("div", "", body);
    const rowBox = h("div", "ms-hm-rows", body);
    const canvas = h("canvas", "ms-hm-canvas", body);
    const bar = h("div", "ms-cbar", body);
    const font = Math.min(11, cell - 1);
    const every = Math.max(1, Math.ceil(10 / cell));
    const rowEls = st.rowLabels.map((s, i) => {
      const d = h("div", "ms-lab", rowBox, i % every === 0 ? s : "");
      d.style.height = `${cell}px`;
      d.style.lineHeight = `${cell}px`;
      d.style.fontSize = `${Math.max(font, 8)}px`;
      d.title = s;
      return d;
    });
    const colEls = st.colLabels.map((s, i) => {
      const d = h("div", "ms-lab ms-vert", colBox, i % every === 0 ? s : "");
      d.style.width = `${cell}px`;
      d.style.lineHeight = `${cell}px`;
      d.style.fontSize = `${Math.max(font, 8)}px`;
      d.title = s;
      return d;
    });
    const ctx = sizeCanvas(canvas, cols * cell, rows * cell);
    paintMatrix(ctx, st.values, 0, rows, cols, (v) => diverging(v, vmax), cols * cell, rows * cell);

    // colour bar: +vmax at the top, 0 in the middle, -vmax at the bottom
    const barH = Math.max(60, Math.min(rows * cell, 200));
    const grad = h("canvas", "ms-cbar-grad", bar);
    const gctx = sizeCanvas(grad, 12, barH);
    for (let y = 0; y < barH; y++) {
      gctx.fillStyle = rgb(diverging(vmax * (1 - (2 * y) / (barH - 1)), vmax));
      gctx.fillRect(0, y, 12, 1);
    }
    const ticks = h("div", "ms-cbar-ticks", bar);
    ticks.style.height = `${barH}px`;
    h("span", "", ticks, fmt(vmax));
    h("span", "", ticks, "0");
    h("span", "", ticks, fmt(-vmax));
    if (st.data.note) h("div", "ms-note", root, st.data.note);
    const tip = makeTip(root);

    let active: [number, number] | null = null;
    const cellAt = (e: MouseEvent): [number, number] | null => {
      const box = canvas.getBoundingClientRect();
      const c = Math.floor(((e.clientX - box.left) / box.width) * cols);
      const r = Math.floor(((e.clientY - box.top) / box.height) * rows);
      return r >= 0 && r < rows && c >= 0 && c < cols ? [r, c] : null;
    };
    const clear = (): void => {
      if (active) {
        rowEls[active[0]].classList.remove("ms-active");
        colEls[active[1]].classList.remove("ms-active");
      }
      active = null;
    };
    canvas.addEventListener("mousemove", (e) => {
      const rc = cellAt(e);
      clear();
      if (!rc) return tip.hide();
      const [r, c] = rc;
      active = rc;
      rowEls[r].classList.add("ms-active");
      colEls[c].classList.add("ms-active");
      const v = st.values[r * cols + c];
      const lines = [`${st.rowLabels[r]} · ${st.colLabels[c]}`, fmt(v)];
      const extra = st.data.hover?.[r]?.[c];
      if (extra) lines.push(String(extra));
      tip.show(e.clientX, e.clientY, lines);
      tip.el.setAttribute("data-row", String(r));
      tip.el.setAttribute("data-col", String(c));
      tip.el.setAttribute("data-value", String(v));
    });
    canvas.addEventListener("mouseleave", () => {
      clear();
      tip.hide();
    });
    canvas.addEventListener("click", (e) => {
      const rc = cellAt(e);
      if (rc && opts.onCell) opts.onCell(rc[0], rc[1]);
    });
    if (opts.exportButtons !== false) exportButtons(root, "heatmap", () => handle);
  };

  const toSVG = (): string => {
    const { rows, cols, vmax, values } = st;
    const cell = Math.max(st.cell, 6);
    const measure = measurer(10);
    const left = 8 + Math.max(0, ...st.rowLabels.map(measure));
    const titleH = st.data.title ? 22 : 4;
    const top = titleH + 8 + Math.max(0, ...st.colLabels.map(measure));
    const parts: string[] = [];
    if (st.data.title) parts.push(`<text x="4" y="15" font-size="13" font-weight="600">${esc(st.data.title)}</text>`);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        const v = values[r * cols + c];
        parts.push(
          `<rect${attrs({ class: "ms-cell", x: left + c * cell, y: top + r * cell, width: cell, height: cell, fill: rgb(diverging(v, vmax)), "data-value": String(v) })}/>`,
        );
      }
    }
    st.rowLabels.forEach((s, r) =>
      parts.push(`<text x="${left - 4}" y="${top + (r + 0.5) * cell + 3}" text-anchor="end" font-size="10">${esc(s)}</text>`),
    );
    st.colLabels.forEach((s, c) => {
      const x = left + (c + 0.5) * cell + 3;
      parts.push(`<text transform="translate(${x},${top - 4}) rotate(-90)" font-size="10">${esc(s)}</text>`);
    });
    const bx = left + cols * cell + 14;
    const bh = Math.max(60, Math.min(rows * cell, 200));
    parts.push(
      `<defs><linearGradient id="ms-cbar" x1="0" y1="0" x2="0" y2="1"><stop offset="0" stop-color="${rgb(diverging(vmax, vmax))}"/>` +
        `<stop offset="0.5" stop-color="${rgb(diverging(0, vmax))}"/><stop offset="1" stop-color="${rgb(diverging(-vmax, vmax))}"/></linearGradient></defs>`,
      `<rect x="${bx}" y="${top}" width="12" height="${bh}" fill="url(#ms-cbar)" stroke="#999"/>`,
      `<text x="${bx + 16}" y="${top + 8}">${esc(fmt(vmax))}</text>`,
      `<text x="${bx + 16}" y="${top + bh / 2 + 4}">0</text>`,
      `<text x="${bx + 16}" y="${top + bh}">${esc(fmt(-vmax))}</text>`,
    );
    let height = top + Math.max(rows * cell, bh) + 8;
    if (st.data.metric) {
      parts.push(`<text x="4" y="${height + 8}" fill="#555">metric: ${esc(st.data.metric)}</text>`);
      height += 16;
    }
    return svgDoc(bx + 16 + measure(fmt(-vmax)) + 8, height + 4, parts.join(""));
  };

  const handle: Handle<HeatmapData> = {
    update(d) {
      st = prepare(d, opts);
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
