// Shared helpers: the component contract, DOM and SVG building, scoped styles, colour scales,
// number formatting, tooltips and image export. No module-level mutable state: every
// component keeps its state in its own closure, so instances never clash.

import { CSS } from "./style";

declare const __MECHSCOPE_VERSION__: string;
export const VERSION: string = __MECHSCOPE_VERSION__;
export const SVG_NS = "http://www.w3.org/2000/svg";

/** What every `render(el, data, opts)` returns. */
export interface Handle<D> {
  update(data: D): void;
  destroy(): void;
  toSVG(): string;
  toPNG(): Promise<Blob>;
}

export type RGB = [number, number, number];

/** Creates an HTML element with a class (and text, set through textContent: data is never parsed as HTML). */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  cls?: string,
  parent?: Node,
  text?: string,
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}

export function svgEl(tag: string, attrs: Record<string, string | number>, parent?: Node): SVGElement {
  const e = document.createElementNS(SVG_NS, tag);
  for (const k in attrs) e.setAttribute(k, String(attrs[k]));
  if (parent) parent.appendChild(e);
  return e;
}

/** Injects the stylesheet once per document (or shadow root), tagged with the bundle version. */
function ensureStyle(el: HTMLElement): void {
  const node = el.getRootNode();
  const doc = el.ownerDocument;
  const host: ParentNode & Node =
    typeof ShadowRoot !== "undefined" && node instanceof ShadowRoot ? node : doc.head || doc.documentElement;
  if (host.querySelector(`style[data-mechscope="${VERSION}"]`)) return;
  const st = doc.createElement("style");
  st.setAttribute("data-mechscope", VERSION);
  st.textContent = CSS;
  host.appendChild(st);
}

/** The component's root: a div appended to `el`, classed `ms-root ms-<name>`, with data-component. */
export function makeRoot(el: HTMLElement, name: string): HTMLDivElement {
  if (!el || typeof (el as HTMLElement).appendChild !== "function") {
    throw new Error(`mechscope.${name}: the first argument must be an HTML element`);
  }
  ensureStyle(el);
  const root = h("div", `ms-root ms-${name}`, el);
  root.setAttribute("data-component", name);
  return root;
}

/** 4 significant digits, without trailing zeros; NaN and infinities spelled out. */
export function fmt(v: number): string {
  if (v === null || v === undefined) return "";
  if (!Number.isFinite(v)) return String(v);
  return String(Number(v.toPrecision(4)));
}

export function esc(s: string): string {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** Serialises attributes for SVG strings (values escaped). */
export function attrs(a: Record<string, string | number | undefined>): string {
  let out = "";
  for (const k in a) if (a[k] !== undefined) out += ` ${k}="${esc(String(a[k]))}"`;
  return out;
}

export function svgDoc(width: number, height: number, body: string): string {
  const w = Math.ceil(width);
  const hh = Math.ceil(height);
  return (
    `<svg xmlns="${SVG_NS}" width="${w}" height="${hh}" viewBox="0 0 ${w} ${hh}" ` +
    `font-family="system-ui, sans-serif" font-size="11"><rect width="100%" height="100%" fill="#fff"/>${body}</svg>`
  );
}

// Diverging blue-white-red (ColorBrewer RdBu stops), t in [-1, 1].
const DIV: RGB[] = [
  [33, 102, 172],
  [146, 197, 222],
  [247, 247, 247],
  [244, 165, 130],
  [178, 24, 43],
];
// Sequential white-blue for weights in [0, 1].
const SEQ: RGB[] = [
  [247, 251, 255],
  [107, 174, 214],
  [8, 48, 107],
];
export const NAN_RGB: RGB = [190, 190, 190];

function ramp(stops: RGB[], t: number): RGB {
  const x = Math.min(1, Math.max(0, t)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i;
  const a = stops[i];
  const b = stops[i + 1];
  return [
    Math.round(a[0] + (b[0] - a[0]) * f),
    Math.round(a[1] + (b[1] - a[1]) * f),
    Math.round(a[2] + (b[2] - a[2]) * f),
  ];
}

/** Colour of v on the diverging scale with symmetric limits ±vmax (NaN grey). */
export function diverging(v: number, vmax: number): RGB {
  if (Number.isNaN(v)) return NAN_RGB;
  return ramp(DIV, (vmax > 0 ? v / vmax : 0) / 2 + 0.5);
}

/** Colour of a weight in [0, 1] on the sequential scale (NaN grey). */
export function sequential(v: number): RGB {
  if (Number.isNaN(v)) return NAN_RGB;
  return ramp(SEQ, v);
}

export function rgb(c: RGB): string {
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

export const POS_RGB: RGB = [178, 24, 43];
export const NEG_RGB: RGB = [33, 102, 172];

/** Sizes a canvas for crisp drawing at the device pixel ratio; returns its 2D context in CSS pixels. */
export function sizeCanvas(c: HTMLCanvasElement, w: number, hh: number): CanvasRenderingContext2D {
  const dpr = window.devicePixelRatio || 1;
  c.width = Math.max(1, Math.round(w * dpr));
  c.height = Math.max(1, Math.round(hh * dpr));
  c.style.width = `${w}px`;
  c.style.height = `${hh}px`;
  const ctx = c.getContext("2d");
  if (!ctx) throw new Error("mechscope: this browser gives no 2D canvas context");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  return ctx;
}

/** Paints a [rows, cols] matrix into (0, 0, w, h) of ctx, one pixel per cell scaled up without smoothing. */
export function paintMatrix(
  ctx: CanvasRenderingContext2D,
  values: Float32Array,
  offset: number,
  rows: number,
  cols: number,
  colour: (v: number) => RGB,
  w: number,
  hh: number,
): void {
  const off = document.createElement("canvas");
  off.width = Math.max(1, cols);
  off.height = Math.max(1, rows);
  const octx = off.getContext("2d");
  if (!octx) return;
  const img = octx.createImageData(off.width, off.height);
  const d = img.data;
  for (let i = 0; i < rows * cols; i++) {
    const c = colour(values[offset + i]);
    d[4 * i] = c[0];
    d[4 * i + 1] = c[1];
    d[4 * i + 2] = c[2];
    d[4 * i + 3] = 255;
  }
  octx.putImageData(img, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.clearRect(0, 0, w, hh);
  ctx.drawImage(off, 0, 0, w, hh);
}

/** A tooltip div inside root (root is position: relative). */
export interface Tip {
  el: HTMLDivElement;
  show(clientX: number, clientY: number, lines: string[]): void;
  hide(): void;
}

export function makeTip(root: HTMLElement): Tip {
  const el = h("div", "ms-tip", root);
  el.hidden = true;
  return {
    el,
    show(clientX, clientY, lines) {
      el.textContent = "";
      lines.forEach((line, i) => h("div", i === 0 ? "ms-tip-head" : "", el, line));
      el.hidden = false;
      const box = root.getBoundingClientRect();
      const tw = el.offsetWidth;
      let x = clientX - box.left + 12;
      if (x + tw > box.width) x = Math.max(0, clientX - box.left - tw - 12);
      el.style.left = `${x}px`;
      el.style.top = `${clientY - box.top + 12}px`;
    },
    hide() {
      el.hidden = true;
    },
  };
}

/** Draws an SVG string onto a canvas (scaled) and encodes it as PNG. */
export function svgToPNG(svg: string, scale = 2): Promise<Blob> {
  return new Promise((resolve, reject) => {
    const url = URL.createObjectURL(new Blob([svg], { type: "image/svg+xml" }));
    const img = new Image();
    img.onload = () => {
      try {
        const w = Math.max(1, img.naturalWidth);
        const hh = Math.max(1, img.naturalHeight);
        // stay inside the browser's canvas limits for very large exports
        const k = Math.min(scale, 16384 / Math.max(w, hh), Math.sqrt(6.4e7 / (w * hh)));
        const c = document.createElement("canvas");
        c.width = Math.max(1, Math.floor(w * k));
        c.height = Math.max(1, Math.floor(hh * k));
        const ctx = c.getContext("2d");
        if (!ctx) throw new Error("mechscope: no 2D canvas context for the PNG export");
        ctx.fillStyle = "#fff";
        ctx.fillRect(0, 0, c.width, c.height);
        ctx.drawImage(img, 0, 0, c.width, c.height);
        c.toBlob((b) => (b ? resolve(b) : reject(new Error("mechscope: the PNG encoder returned nothing"))), "image/png");
      } catch (e) {
        reject(e);
      } finally {
        URL.revokeObjectURL(url);
      }
    };
    img.onerror = () => {
      URL.revokeObjectURL(url);
      reject(new Error("mechscope: the SVG export could not be drawn as an image"));
    };
    img.src = url;
  });
}

function download(blob: Blob, name: string): void {
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

/** Small "SVG" / "PNG" download buttons in the root's corner. */
export function exportButtons(root: HTMLElement, name: string, handle: () => Handle<unknown>): void {
  const bar = h("div", "ms-export", root);
  const svg = h("button", "", bar, "SVG");
  svg.type = "button";
  svg.title = "download as SVG";
  svg.onclick = () => download(new Blob([handle().toSVG()], { type: "image/svg+xml" }), `${name}.svg`);
  const png = h("button", "", bar, "PNG");
  png.type = "button";
  png.title = "download as PNG";
  png.onclick = () => {
    handle()
      .toPNG()
      .then((b) => download(b, `${name}.png`))
      .catch((e) => console.error(e));
  };
}

/** A text measurer in the UI font, for laying out SVG exports. */
export function measurer(px = 11): (s: string) => number {
  const c = document.createElement("canvas").getContext("2d");
  if (!c) return (s) => s.length * px * 0.6;
  c.font = `${px}px system-ui, sans-serif`;
  return (s) => c.measureText(s).width;
}

/** Labels for an axis: the given strings, or the indices. Throws on a length mismatch. */
export function labels(given: unknown, n: number, what: string, comp: string): string[] {
  if (given === undefined || given === null) return Array.from({ length: n }, (_, i) => String(i));
  if (!Array.isArray(given) || given.length !== n) {
    throw new Error(`mechscope.${comp}: ${what} has ${Array.isArray(given) ? given.length : "no"} labels for ${n} entries`);
  }
  return given.map((s) => String(s));
}

/** A token with its whitespace made visible: space ␣, newline ↵, tab ⇥, carriage return ␍, empty ∅. */
export function visible(tok: string): string {
  const s = String(tok);
  return s === "" ? "∅" : s.replace(/ /g, "␣").replace(/\n/g, "↵").replace(/\t/g, "⇥").replace(/\r/g, "␍");
}
