# Every target sets itself up from nothing: a .venv at the repo root, torch 2.13.0 (CPU wheel) first, then the
# project with its test extras, pinned by constraints.txt so pip never backtracks.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.grporoc-installed
PYTEST_ARGS ?=

.PHONY: venv test test-fast lint demo bench clean experiment

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

# GRPO vs random down-sampling vs GRPO-RoC side by side (docs/experiments/roc_vs_grpo/): 3 seeds x 3 arms
experiment: venv
	$(PY) -m grporoc_plugin.experiments.roc_vs_grpo --arms grpo,random,roc --seeds 3 --out runs/roc_vs_grpo

BENCHES := selection reward sandbox load step cpu_rollout import

# every benchmark runs even when an earlier one misses its target; the target fails if any did
bench: venv
	@failed=""; for b in $(BENCHES); do $(PY) benchmarks/bench_$$b.py || failed="$$failed $$b"; done; \
	if [ -n "$$failed" ]; then echo "benchmarks that missed their target:$$failed"; exit 1; fi

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
