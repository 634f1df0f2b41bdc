# Every target creates .venv when missing and installs the project into it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-stress test-sync-stress test-install test-nfs lint bench dist clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch is pinned to the CPU build this project tests with (the Keras examples use its backend).
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/localrun demo

# The suite people run: about 5 minutes on 2 cores. The slow suites below have targets of their own,
# and .ci/run runs every one of them.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 -m "not install" tests

# 100 trials of an owner SIGSTOPped at a random instant, each taken over from another process.
test-stress: $(STAMP)
	LOCALRUN_STOP_TRIALS=100 $(BIN)/python -m pytest -q -n 2 tests/test_stopped_owner.py

# 50 trials of a syncer SIGKILLed at a random instant, each rerun until the remote equals the root.
test-sync-stress: $(STAMP)
	LOCALRUN_SYNC_TRIALS=50 $(BIN)/python -m pytest -q tests/test_sync.py -k sigkill

# The documented install lines, run as written in a fresh venv (downloads from the package index).
test-install: $(STAMP)
	$(BIN)/python -m pytest -q -m install tests/test_install.py

lint: $(STAMP)
	$(BIN)/ruff check localrun tests $(wildcard benchmarks examples)
	$(BIN)/ruff format --check localrun tests $(wildcard benchmarks examples)
	$(BIN)/mypy

test-nfs: $(STAMP)
	bash tests/nfs/run-all.sh

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_log.py
	$(BIN)/python benchmarks/bench_resume.py
	if command -v valgrind >/dev/null; then $(BIN)/python benchmarks/bench_log_callgrind.py; \
	else echo "valgrind not installed: skipping benchmarks/bench_log_callgrind.py"; fi

# The wheel (dist/localrun_tracker-<version>-py3-none-any.whl) for machines without the checkout.
# pip builds it with the build backend pyproject.toml names (hatchling), in an isolated env.
# Only the wheel: pip cannot build an sdist, and the checkout itself is the source.
dist: $(BIN)/python
	rm -f dist/localrun_tracker-*.whl
	$(BIN)/pip wheel -q --no-deps -w dist .

clean:
	rm -rf $(VENV) localruns .pytest_cache .mypy_cache .ruff_cache
