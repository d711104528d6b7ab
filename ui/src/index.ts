// mechscope's UI components: one ES module with no dependencies and no network access.
// Every component is render(el, data, opts?) -> {update, destroy, toSVG, toPNG}; the data
// contracts are in docs/ui-components.md.

import { attention } from "./attention";
import { graph } from "./graph";
import { heatmap } from "./heatmap";
import { histogram } from "./histogram";
import { table } from "./table";
import { decodeTensor } from "./tensor";
import { tokens } from "./tokens";
import { VERSION } from "./util";

export const version: string = VERSION;
export { attention, decodeTensor, graph, heatmap, histogram, table, tokens };

// Notebook cells can reuse an already-loaded copy through globalThis.mechscope; an existing
// value (another copy, or anything else a page put there) is never overwritten.
const g = globalThis as { mechscope?: unknown };
if (typeof g.mechscope === "undefined") {
  g.mechscope = Object.freeze({ heatmap, attention, tokens, histogram, table, graph, decodeTensor, version });
}
