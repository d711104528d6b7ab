#!/usr/bin/env bash
# Rebuilds the UI bundle from ui/ (npm ci + esbuild) in a temporary copy and compares it byte for
# byte with the committed src/mechscope/viz/static/mechscope.js. Needs Node and npm, and the
# network only for `npm ci`. Exit 1 when the committed bundle is not what the sources build.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bundle="$root/src/mechscope/viz/static/mechscope.js"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

for tool in node npm; do
  command -v "$tool" >/dev/null || { echo "check_bundle: $tool is not installed" >&2; exit 1; }
done
[ -f "$bundle" ] || { echo "check_bundle: $bundle is missing" >&2; exit 1; }

# a clean copy of the sources: no local node_modules, another absolute path than the checkout
mkdir "$tmp/ui"
cp -R "$root/ui/package.json" "$root/ui/package-lock.json" "$root/ui/tsconfig.json" "$root/ui/build.mjs" "$root/ui/src" "$tmp/ui/"
(cd "$tmp/ui" && npm ci --no-audit --no-fund --loglevel=error >/dev/null && node build.mjs --outfile "$tmp/mechscope.js")

if cmp -s "$tmp/mechscope.js" "$bundle"; then
  echo "check_bundle: src/mechscope/viz/static/mechscope.js matches a rebuild of ui/src ($(wc -c <"$bundle") bytes)"
else
  echo "check_bundle: src/mechscope/viz/static/mechscope.js differs from a rebuild of ui/src" >&2
  echo "  rebuild it with: cd ui && npm ci && npm run build   (then commit the bundle)" >&2
  cmp "$tmp/mechscope.js" "$bundle" >&2 || true
  exit 1
fi
