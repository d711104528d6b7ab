// Tokens shaded by a value: red for positive, blue for negative, alpha |v| / max. Whitespace is
// shown (␣ ↵ ⇥), every string goes through textContent, and each span carries data-act.

import {
  type Handle,
  NEG_RGB,
  POS_RGB,
  attrs,
  esc,
  exportButtons,
  fmt,
  h,
  makeRoot,
  measurer,
  svgDoc,
  svgToPNG,
  visible,
} from "./util";

export interface TokensData {
  tokens: string[];
  values: Array<number | null>;
  /** Value shaded at full strength (default max |v|). */
  max?: number;
  /** Index of a token to outline (e.g. the predicted position). */
  target?: number;
}

export interface TokensOpts {
  exportButtons?: boolean;
}

interface State {
  tokens: string[];
  values: number[];
  max: number;
  target: number;
}

function prepare(data: TokensData): State {
  if (!data || !Array.isArray(data.tokens) || !Array.isArray(data.values)) {
    throw new Error("mechscope.tokens: data needs tokens and values arrays");
  }
  if (data.tokens.length !== data.values.length) {
    throw new Error(`mechscope.tokens: ${data.tokens.length} tokens but ${data.values.length} values`);
  }
  const values = data.values.map((v) => (v === null || v === undefined ? NaN : Number(v)));
  let max = data.max ?? 0;
  if (!data.max) for (const v of values) if (Math.abs(v) > max) max = Math.abs(v);
  return { tokens: data.tokens.map(String), values, max, target: data.target ?? -1 };
}

function shade(v: number, max: number): [string, number] {
  if (!(max > 0) || Number.isNaN(v)) return ["transparent", 0];
  const a = Math.min(1, Math.abs(v) / max);
  const c = v >= 0 ? POS_RGB : NEG_RGB;
  return [`rgba(${c[0]},${c[1]},${c[2]},${a.toFixed(3)})`, a];
}

export function tokens(el: HTMLElement, data: TokensData, opts: TokensOpts = {}): Handle<TokensData> {
  const root = makeRoot(el, "tokens");
  let st = prepare(data);

  const draw = (): void => {
    root.textContent = "";
    root.setAttribute("data-max", String(st.max));
    const body = h("div", "ms-tk-body", root);
    st.tokens.forEach((t, i) => {
      const v = st.values[i];
      const s = h("span", "ms-tk", body, visible(t));
      const [bg, a] = shade(v, st.max);
      s.style.background = bg;
      if (a > 0.6) s.classList.add("ms-dark");
      if (i === st.target) s.classList.add("ms-target");
      s.setAttribute("data-act", String(v));
      s.setAttribute("data-i", String(i));
      s.title = fmt(v);
      if (t.includes("\n")) h("br", "", body);
    });
    if (opts.exportButtons !== false) exportButtons(root, "tokens", () => handle);
  };

  const toSVG = (): string => {
    const measure = measurer(13);
    const width = 720;
    const lineH = 22;
    let x = 6;
    let y = 6;
    const parts: string[] = [];
    st.tokens.forEach((t, i) => {
      const text = visible(t);
      const w = measure(text) + 4;
      if (x + w > width - 6 && x > 6) {
        x = 6;
        y += lineH;
      }
      const [bg] = shade(st.values[i], st.max);
      const stroke = i === st.target ? ' stroke="#000" stroke-width="1.5"' : "";
      parts.push(
        `<rect${attrs({ x, y, width: w, height: lineH - 4, rx: 2, fill: bg, "data-act": String(st.values[i]) })}${stroke}/>`,
        `<text x="${x + 2}" y="${y + 13}" font-size="13">${esc(text)}</text>`,
      );
      x += w + 1;
      if (t.includes("\n")) {
        x = 6;
        y += lineH;
      }
    });
    return svgDoc(width, y + lineH + 6, parts.join(""));
  };

  const handle: Handle<TokensData> = {
    update(d) {
      st = prepare(d);
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
