// Builds ui/src/index.ts into one minified ES module, the same bytes on every machine:
// no timestamps, no absolute paths, no legal comments, a fixed target.
//   node build.mjs                 -> ../src/mechscope/viz/static/mechscope.js
//   node build.mjs --outfile PATH  -> PATH (scripts/check_bundle.sh compares the two)
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const { version } = JSON.parse(readFileSync(join(here, "package.json"), "utf8"));
const i = process.argv.indexOf("--outfile");
const outfile = i > 0 ? process.argv[i + 1] : join(here, "..", "src", "mechscope", "viz", "static", "mechscope.js");

await build({
  absWorkingDir: here,
  entryPoints: ["src/index.ts"],
  bundle: true,
  format: "esm",
  target: "es2020",
  platform: "browser",
  minify: true,
  legalComments: "none",
  charset: "utf8",
  sourcemap: false,
  define: { __MECHSCOPE_VERSION__: JSON.stringify(version) },
  banner: { js: `/* mechscope ui ${version}: built from ui/src by esbuild (cd ui && npm ci && npm run build); do not edit */` },
  outfile,
  logLevel: "warning",
});
