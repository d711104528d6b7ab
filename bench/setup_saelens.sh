#!/usr/bin/env bash
# Create bench/.venv-saelens: a separate environment with SAELens (pinned) and mechscope
# (editable, without its dependency resolution, so SAELens's pins win where they differ).
# Idempotent: re-running only installs what is missing. Used by bench/saelens_compat.py and
# by the TopK training-step benchmark.
set -euo pipefail

SAE_LENS_VERSION="${SAE_LENS_VERSION:-6.54.12}"
TORCH_VERSION="2.13.0"   # the CPU build; an unpinned torch would pull a multi-GB CUDA build
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/bench/.venv-saelens"
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check -q)
STAMP="$VENV/.installed-sae-lens-$SAE_LENS_VERSION"

if [[ -f "$STAMP" ]]; then
    echo "bench/.venv-saelens is ready (sae-lens $SAE_LENS_VERSION)"
    exit 0
fi
test -x "$PY" || python3 -m venv "$VENV"
"${PIP[@]}" install "torch==$TORCH_VERSION"
"${PIP[@]}" install "torch==$TORCH_VERSION" "sae-lens==$SAE_LENS_VERSION"
"${PIP[@]}" install --no-deps -e "$ROOT"
# mechscope's own imports that sae-lens does not already bring in
missing=()
for mod_pkg in safetensors:safetensors gguf:gguf numpy:numpy matplotlib:matplotlib tqdm:tqdm \
               platformdirs:platformdirs accelerate:accelerate transformers:transformers; do
    mod="${mod_pkg%%:*}"; pkg="${mod_pkg##*:}"
    "$PY" -c "import $mod" 2>/dev/null || missing+=("$pkg")
done
if ((${#missing[@]})); then
    "${PIP[@]}" install "torch==$TORCH_VERSION" "${missing[@]}"
fi
"$PY" -c "import sae_lens, mechscope, torch; print('sae-lens', sae_lens.__version__, 'torch', torch.__version__)"
touch "$STAMP"
