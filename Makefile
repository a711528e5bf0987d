# clinalign developer entry points. `make quickstart` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Never reach a model hub from tests or the demo: everything runs on local tiny models.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install dev quickstart test lint docs wheel-check format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when the project metadata changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed

dev: $(VENV)/.installed-dev

quickstart: install
	$(BIN)/clinalign quickstart --out runs/quickstart

lint: dev
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

test: lint
	$(BIN)/python -m pytest
	$(MAKE) --no-print-directory docs wheel-check

# The API reference and docs pages; --strict turns a broken reference or link into a failure.
docs: dev
	$(BIN)/python -m mkdocs build --strict --quiet --site-dir build/site

# Build sdist + wheel, install the wheel into a throwaway --target and run `clinalign --help` and
# `clinalign quickstart --fast` from a temporary folder with the checkout not importable (~4 min).
wheel-check: dev
	$(BIN)/python .ci/wheel_check.py

format: dev
	$(BIN)/ruff format src tests bench examples
	$(BIN)/ruff check --fix src tests

bench: dev
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) runs build dist .pytest_cache .ruff_cache
