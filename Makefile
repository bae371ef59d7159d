# Every target sets itself up from nothing: a .venv at the repo root, torch 2.13.0 (CPU wheel) first, then the
# project with its test extras, pinned by constraints.txt so pip never backtracks.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.grporoc-installed
PYTEST_ARGS ?=

.PHONY: venv test test-fast lint demo bench clean

$(STAMP): setup.cfg pyproject.toml constraints.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	$(PY) -m grporoc_plugin doctor
	@touch $(STAMP)

venv: $(STAMP)

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: venv lint
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: venv
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

demo: venv
	$(PY) -m grporoc_plugin.demo

bench: venv
	$(PY) benchmarks/bench_selection.py
	$(PY) benchmarks/bench_reward.py
	$(PY) benchmarks/bench_sandbox.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
