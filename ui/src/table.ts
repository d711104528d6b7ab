// A virtualised table over a paged `fetch(offset, limit, sort, filter)`: only the visible rows
// (plus a small overscan) are in the DOM, a spacer gives the scroll height of all rows. Rows are
// fetched in blocks and cached per query; clicking a header sorts, the filter box is debounced.

import { type Handle, attrs, esc, exportButtons, fmt, h, makeRoot, measurer, svgDoc, svgToPNG } from "./util";

export interface Column {
  key: string;
  label?: string;
  numeric?: boolean;
  /** "int", ".3f" (fixed), ".4g" (significant digits), ".2e", ".1%"; or a function when built in JS. */
  format?: string | ((value: unknown, row: Row) => string);
  /** Render as a link to row.href. */
  link?: boolean;
  /** Width in CSS pixels (default: shares the free width). */
  width?: number;
}
export type Row = Record<string, unknown>;
export interface Sort {
  key: string;
  desc: boolean;
}
export interface TableData {
  columns: Column[];
  total: number;
  rowHeight?: number;
}
export interface TableOpts {
  fetch(offset: number, limit: number, sort: Sort | null, filter: string): Promise<{ rows: Row[]; total: number }>;
  onRow?(row: Row): void;
  /** Height of the scrolling area in CSS pixels (default 360). */
  height?: number;
  /** Filter debounce in milliseconds (default 250). */
  debounce?: number;
  exportButtons?: boolean;
}

const BLOCK = 100;
const OVERSCAN = 8;

export function formatValue(col: Column, v: unknown, row: Row): string {
  if (v === null || v === undefined) return "";
  if (typeof col.format === "function") return col.format(v, row);
  if (typeof v !== "number") return String(v);
  const spec = col.format;
  if (spec === "int") return String(Math.round(v));
  const m = spec ? /^\.(\d+)([fge%])$/.exec(spec) : null;
  if (m) {
    const n = Number(m[1]);
    if (m[2] === "f") return v.toFixed(n);
    if (m[2] === "e") return v.toExponential(n);
    if (m[2] === "%") return `${(v * 100).toFixed(n)}%`;
    return String(Number(v.toPrecision(Math.max(1, n))));
  }
  return Number.isInteger(v) ? String(v) : fmt(v);
}

/** Only relative links and http(s)/mailto: never javascript: or data: URLs from data. */
function safeHref(href: unknown): string | null {
  if (typeof href !== "string") return null;
  const scheme = /^\s*([a-zA-Z][a-zA-Z0-9+.-]*):/.exec(href);
  if (scheme && !["http", "https", "mailto"].includes(scheme[1].toLowerCase())) return null;
  return href;
}

export function table(el: HTMLElement, data: TableData, opts: TableOpts): Handle<TableData> {
  if (!opts || typeof opts.fetch !== "function") throw new Error("mechscope.table: opts.fetch(offset, limit, sort, filter) is required");
  const root = makeRoot(el, "table");
  let columns: Column[] = [];
  let rh = 24;
  let total = 0;
  let sort: Sort | null = null;
  let filter = "";
  let gen = 0; // query generation: answers to an older query are dropped
  let cache = new Map<number, Row[]>();
  let pending = new Set<number>();
  let timer: ReturnType<typeof setTimeout> | undefined;
  let raf = 0;
  let alive = true;

  const bar = h("div", "ms-tb-bar", root);
  const input = h("input", "ms-filter", bar);
  input.type = "search";
  input.placeholder = "filter…";
  input.setAttribute("aria-label", "filter rows");
  const count = h("span", "ms-sub", bar);
  const error = h("span", "ms-error", bar);
  const head = h("div", "ms-tb-head", root);
  const scroll = h("div", "ms-tb-scroll", root);
  scroll.style.height = `${opts.height ?? 360}px`;
  const spacer = h("div", "ms-tb-spacer", scroll);
  const body = h("div", "ms-tb-rows", scroll);
  if (opts.exportButtons !== false) exportButtons(root, "table", () => handle);

  const template = (): string =>
    columns.map((c) => (c.width ? `${c.width}px` : c.numeric ? "minmax(60px, 0.6fr)" : "minmax(80px, 1fr)")).join(" ");

  const setTotal = (n: number): void => {
    total = Math.max(0, Math.floor(n));
    spacer.style.height = `${total * rh}px`;
    root.setAttribute("data-total", String(total));
    count.textContent = `${total.toLocaleString("en-US")} rows`;
  };

  const drawHead = (): void => {
    head.textContent = "";
    head.style.gridTemplateColumns = template();
    for (const c of columns) {
      const b = h("button", c.numeric ? "ms-th ms-num" : "ms-th", head);
      b.type = "button";
      b.setAttribute("data-key", c.key);
      const arrow = sort && sort.key === c.key ? (sort.desc ? " ▼" : " ▲") : "";
      b.textContent = (c.label ?? c.key) + arrow;
      b.title = `sort by ${c.label ?? c.key}`;
      b.addEventListener("click", () => {
        sort = sort && sort.key === c.key ? { key: c.key, desc: !sort.desc } : { key: c.key, desc: !!c.numeric };
        root.setAttribute("data-sort", `${sort.key}:${sort.desc ? "desc" : "asc"}`);
        drawHead();
        requery();
      });
    }
    head.style.paddingRight = `${scroll.offsetWidth - scroll.clientWidth}px`;
  };

  const load = (block: number): void => {
    if (cache.has(block) || pending.has(block)) return;
    pending.add(block);
    const g = gen;
    opts
      .fetch(block * BLOCK, BLOCK, sort ? { ...sort } : null, filter)
      .then((res) => {
        if (!alive || g !== gen) return;
        pending.delete(block);
        if (!res || !Array.isArray(res.rows)) throw new Error("mechscope.table: fetch must resolve to {rows, total}");
        cache.set(block, res.rows);
        error.textContent = "";
        if (typeof res.total === "number" && res.total !== total) setTotal(res.total);
        schedule();
      })
      .catch((e: unknown) => {
        if (!alive || g !== gen) return;
        pending.delete(block);
        error.textContent = `could not load rows: ${e instanceof Error ? e.message : String(e)}`;
        console.error(e);
      });
  };

  const renderRows = (): void => {
    raf = 0;
    const first = Math.max(0, Math.floor(scroll.scrollTop / rh) - OVERSCAN);
    const last = Math.min(total, Math.ceil((scroll.scrollTop + scroll.clientHeight) / rh) + OVERSCAN);
    // at least the first visible block, even while the total is 0 (it may not be any more)
    for (let b = Math.floor(first / BLOCK); b === Math.floor(first / BLOCK) || b * BLOCK < last; b++) load(b);
    body.textContent = "";
    body.style.top = `${first * rh}px`;
    head.style.paddingRight = `${scroll.offsetWidth - scroll.clientWidth}px`;
    const tpl = template();
    for (let i = first; i < last; i++) {
      const row = cache.get(Math.floor(i / BLOCK))?.[i % BLOCK];
      const tr = h("div", row ? "ms-tr" : "ms-tr ms-loading", body);
      tr.style.height = `${rh}px`;
      tr.style.gridTemplateColumns = tpl;
      tr.setAttribute("data-index", String(i));
      if (!row) {
        h("div", "ms-td", tr, "…");
        continue;
      }
      for (const c of columns) {
        const td = h("div", c.numeric ? "ms-td ms-num" : "ms-td", tr);
        const text = formatValue(c, row[c.key], row);
        const href = c.link ? safeHref(row.href) : null;
        if (href !== null) {
          const a = h("a", "", td, text);
          a.href = href;
        } else td.textContent = text;
        td.title = text;
      }
      if (opts.onRow) tr.addEventListener("click", () => opts.onRow?.(row));
    }
  };

  const schedule = (): void => {
    if (!raf && alive) raf = requestAnimationFrame(renderRows);
  };

  const requery = (): void => {
    gen++;
    cache = new Map();
    pending = new Set();
    scroll.scrollTop = 0;
    schedule();
  };

  const setData = (d: TableData): void => {
    if (!d || !Array.isArray(d.columns)) throw new Error("mechscope.table: data.columns must be a list of {key, label}");
    columns = d.columns;
    rh = d.rowHeight ?? 24;
    setTotal(d.total ?? 0);
    drawHead();
    requery();
  };

  scroll.addEventListener("scroll", schedule);
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      filter = input.value;
      root.setAttribute("data-filter", filter);
      requery();
    }, opts.debounce ?? 250);
  });

  const toSVG = (): string => {
    const measure = measurer(11);
    const rows: Row[] = [];
    const first = Math.floor(scroll.scrollTop / rh);
    for (let i = first; i < Math.min(total, first + 40); i++) {
      const r = cache.get(Math.floor(i / BLOCK))?.[i % BLOCK];
      if (r) rows.push(r);
    }
    const cells = [columns.map((c) => c.label ?? c.key), ...rows.map((r) => columns.map((c) => formatValue(c, r[c.key], r)))];
    const widths = columns.map((_, j) => Math.min(320, Math.max(...cells.map((row) => measure(row[j]))) + 16));
    const parts: string[] = [];
    cells.forEach((row, i) => {
      let x = 0;
      const y = i * 20;
      if (i % 2 === 0 && i > 0) parts.push(`<rect x="0" y="${y}" width="${widths.reduce((a, b) => a + b, 0)}" height="20" fill="#f4f6f8"/>`);
      row.forEach((text, j) => {
        const num = columns[j].numeric;
        const tx = num ? x + widths[j] - 8 : x + 8;
        parts.push(`<text${attrs({ x: tx, y: y + 14, "text-anchor": num ? "end" : "start", "font-weight": i === 0 ? "600" : undefined })}>${esc(text)}</text>`);
        x += widths[j];
      });
    });
    return svgDoc(widths.reduce((a, b) => a + b, 0), cells.length * 20 + 4, parts.join(""));
  };

  const handle: Handle<TableData> = {
    update: setData,
    destroy() {
      alive = false;
      clearTimeout(timer);
      if (raf) cancelAnimationFrame(raf);
      root.remove();
    },
    toSVG,
    toPNG: () => svgToPNG(toSVG()),
  };
  setData(data);
  return handle;
}
