# The two commands a newcomer needs: `make demo` and `make test`. Both create the
# environment first (uv from PyPI, then every dependency pinned by uv.lock).
SHELL := /bin/bash
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
RAT := $(VENV)/bin/rat
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))
export UV_PYTHON_DOWNLOADS := never

.PHONY: env demo test test-fast check lint types imports bench clean

$(UV):
	python3 -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --quiet
	touch $@

env: $(VENV)/.synced  ## create or update the environment

demo: env  ## the whole POS example, end to end
	rm -rf demo
	$(RAT) demo demo

test: env lint types imports  ## lint, types, import contract and the full test suite: what CI runs
	bash scripts/pytest-strict $(PY) -m pytest -q

test-fast: env  ## unmarked (fast) tests only
	bash scripts/pytest-strict $(PY) -m pytest -q -m "not slow"

lint: env
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

types: env
	$(VENV)/bin/mypy

imports: env
	$(VENV)/bin/lint-imports

check: test  ## the same as CI (kept for habit)

bench: env  ## benchmarks; results print as tables and land in bench/results/
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) $(TOOLS) demo .pytest_cache .mypy_cache .ruff_cache
