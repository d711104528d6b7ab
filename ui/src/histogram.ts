// Histogram of [low, high, count] bins as SVG bars (log-spaced x when `log`), with vertical marks
// (e.g. equal-count quantile edges). The live SVG is also the export.

import { type Handle, SVG_NS, esc, exportButtons, fmt, makeRoot, svgToPNG } from "./util";

export interface HistogramData {
  bins: Array<[number, number, number]>;
  marks?: number[];
  log?: boolean;
  xlabel?: string;
  title?: string;
}

export interface HistogramOpts {
  width?: number;
  height?: number;
  exportButtons?: boolean;
}

const M = { l: 46, r: 12, t: 12, b: 36 };

function ticksLinear(lo: number, hi: number): number[] {
  const span = hi - lo || 1;
  const step0 = span / 5;
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= step0) ?? step0;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

function build(data: HistogramData, opts: HistogramOpts): string {
  if (!data || !Array.isArray(data.bins)) throw new Error("mechscope.histogram: data.bins must be a list of [low, high, count]");
  // numbers only from here on: every value written into the SVG string below is a number or escaped
  const bins = data.bins.map((b) => {
    if (!Array.isArray(b) || b.length !== 3 || !(Number(b[1]) >= Number(b[0]))) {
      throw new Error(`mechscope.histogram: bad bin ${JSON.stringify(b)} (want [low, high, count] with high >= low)`);
    }
    return [Number(b[0]), Number(b[1]), Number(b[2])];
  });
  const marks = (data.marks ?? []).map(Number);
  const W = opts.width ?? 440;
  const H = opts.height ?? 170;
  const log = !!data.log;
  let lo = Infinity;
  let hi = -Infinity;
  let top = 0;
  for (const [a, b, c] of bins) {
    if (log) {
      if (a > 0) lo = Math.min(lo, a);
      if (b > 0) lo = Math.min(lo, b);
    } else lo = Math.min(lo, a);
    hi = Math.max(hi, b);
    top = Math.max(top, c);
  }
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) {
    lo = log ? 1 : 0;
    hi = log ? 10 : 1;
  }
  if (hi <= lo) hi = log ? lo * 10 : lo + 1;
  const f = log ? Math.log10 : (v: number) => v;
  const x = (v: number) => M.l + ((f(Math.max(v, lo)) - f(lo)) / (f(hi) - f(lo))) * (W - M.l - M.r);
  const y = (c: number) => H - M.b - (top > 0 ? (c / top) * (H - M.t - M.b) : 0);
  const parts: string[] = [];
  if (data.title) parts.push(`<text x="${M.l}" y="10" font-weight="600">${esc(data.title)}</text>`);
  bins.forEach(([a, b, c], i) => {
    const x0 = x(a);
    const w = Math.max(0.5, x(b) - x0 - 0.5);
    parts.push(
      `<rect class="ms-bar" data-i="${i}" data-low="${a}" data-high="${b}" data-count="${c}" x="${x0.toFixed(2)}" ` +
        `y="${y(c).toFixed(2)}" width="${w.toFixed(2)}" height="${(H - M.b - y(c)).toFixed(2)}" fill="#6b8fbf">` +
        `<title>[${esc(fmt(a))}, ${esc(fmt(b))}): ${c}</title></rect>`,
    );
  });
  for (const m of marks) {
    if (!(m >= lo && m <= hi)) continue;
    const mx = x(m).toFixed(2);
    parts.push(
      `<line class="ms-mark" data-mark="${m}" x1="${mx}" x2="${mx}" y1="${M.t}" y2="${H - M.b}" stroke="#c0392b" stroke-dasharray="3,2"><title>${esc(fmt(m))}</title></line>`,
    );
  }
  // axes
  parts.push(`<line x1="${M.l}" x2="${W - M.r}" y1="${H - M.b}" y2="${H - M.b}" stroke="#333"/>`);
  parts.push(`<line x1="${M.l}" x2="${M.l}" y1="${M.t}" y2="${H - M.b}" stroke="#333"/>`);
  const ticks = log
    ? Array.from({ length: Math.floor(Math.log10(hi)) - Math.ceil(Math.log10(lo)) + 1 }, (_, i) => 10 ** (Math.ceil(Math.log10(lo)) + i))
    : ticksLinear(lo, hi);
  for (const t of ticks) {
    const tx = x(t).toFixed(2);
    parts.push(`<line x1="${tx}" x2="${tx}" y1="${H - M.b}" y2="${H - M.b + 4}" stroke="#333"/>`);
    parts.push(`<text x="${tx}" y="${H - M.b + 15}" text-anchor="middle">${esc(log ? `1e${Math.round(Math.log10(t))}` : fmt(t))}</text>`);
  }
  parts.push(`<text x="${M.l - 4}" y="${M.t + 8}" text-anchor="end">${top}</text>`);
  parts.push(`<text x="${M.l - 4}" y="${H - M.b}" text-anchor="end">0</text>`);
  if (data.xlabel) parts.push(`<text x="${(M.l + W - M.r) / 2}" y="${H - 4}" text-anchor="middle" fill="#444">${esc(data.xlabel)}</text>`);
  return (
    `<svg xmlns="${SVG_NS}" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="system-ui, sans-serif" font-size="10">` +
    `<rect width="100%" height="100%" fill="#fff"/>${parts.join("")}</svg>`
  );
}

export function histogram(el: HTMLElement, data: HistogramData, opts: HistogramOpts = {}): Handle<HistogramData> {
  const root = makeRoot(el, "histogram");
  let svg = "";
  const draw = (d: HistogramData): void => {
    svg = build(d, opts); // built as an escaped string, parsed as SVG only (never as HTML)
    const doc = new DOMParser().parseFromString(svg, "image/svg+xml");
    root.textContent = "";
    root.setAttribute("data-bins", String(d.bins.length));
    root.appendChild(document.importNode(doc.documentElement, true));
    if (opts.exportButtons !== false) exportButtons(root, "histogram", () => handle);
  };
  const handle: Handle<HistogramData> = {
    update: draw,
    destroy() {
      root.remove();
    },
    toSVG: () => svg,
    toPNG: () => svgToPNG(svg),
  };
  draw(data);
  return handle;
}
