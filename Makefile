# Every target creates .venv when missing and installs the project into it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo ui ui-check test test-frameworks test-stress test-sync-stress test-install test-servers test-nfs test-browser test-mlflow mlflow-venv lint bench bench-callgrind bench-mlflow dist clean

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

# The dashboard's uPlot (ui/package.json pins it, ui/package-lock.json holds its integrity hash),
# fetched from the npm registry by npm ci and copied with its LICENSE into the package, where it is
# committed: installing localrun needs no npm and the dashboard loads nothing from a CDN.
# ui-check (run by .ci/run) rebuilds in a temp dir and fails if the committed files differ.
UI_VENDOR := localrun/_server/static/vendor
UI_FILES := dist/uPlot.iife.min.js dist/uPlot.min.css LICENSE

ui:
	cd ui && npm ci --ignore-scripts --no-audit --no-fund
	mkdir -p $(UI_VENDOR)
	for f in $(UI_FILES); do cp ui/node_modules/uplot/$$f $(UI_VENDOR)/; done

ui-check:
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	cp ui/package.json ui/package-lock.json "$$tmp"/ && \
	(cd "$$tmp" && npm ci --ignore-scripts --no-audit --no-fund) && \
	mkdir "$$tmp/vendor" && \
	for f in $(UI_FILES); do cp "$$tmp/node_modules/uplot/$$f" "$$tmp/vendor/"; done && \
	diff -r "$$tmp/vendor" $(UI_VENDOR) && \
	echo "ui-check: $(UI_VENDOR) is what ui/package-lock.json pins"

# The suite people run: about 5 minutes on 2 cores. The slow suites below have targets of their own,
# and .ci/run runs every one of them.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 -m "not install and not mlflow and not swift and not server and not frameworks and not browser" tests

# Lightning, Transformers and Accelerate training loops, SIGKILLed and resumed (several minutes).
test-frameworks: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 -m frameworks tests/integrations tests/test_docs.py

# 100 trials of an owner SIGSTOPped at a random instant, each taken over from another process.
test-stress: $(STAMP)
	LOCALRUN_STOP_TRIALS=100 $(BIN)/python -m pytest -q -n 2 tests/test_stopped_owner.py

# 50 trials of a syncer SIGKILLed at a random instant, each rerun until the remote equals the root.
test-sync-stress: $(STAMP)
	LOCALRUN_SYNC_TRIALS=50 $(BIN)/python -m pytest -q tests/test_sync.py -k sigkill

# The documented install lines, run as written in a fresh venv (downloads from the package index).
test-install: $(STAMP)
	$(BIN)/python -m pytest -q -m install tests/test_install.py

# Real servers the tests start on loopback: `localrun server` processes, and S3 against OpenStack
# Swift (and DuckDB's httpfs); .ci/install-servers installs Swift (Debian packages and a tools
# venv; run it once, as root).
test-servers: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 -m "swift or server" tests

# The dashboard's pages in Debian's headless Chromium driven by playwright (a few minutes;
# one worker: two Chromiums on 2 cores only trade waiting for CPU);
# .ci/install-browser installs the chromium package (as root; idempotent and quiet).
test-browser: $(STAMP)
	bash .ci/install-browser
	$(BIN)/python -m pytest -q -m browser tests/ui

lint: $(STAMP)
	$(BIN)/ruff check localrun tests $(wildcard benchmarks examples)
	$(BIN)/ruff format --check localrun tests $(wildcard benchmarks examples)
	$(BIN)/mypy

# A real MLflow tracking server for the MLflow sync tests, in a venv of its own: MLflow pins many
# packages, and localrun's client never imports it (it speaks MLflow's REST API with httpx).
MLFLOW_VERSION := 3.17.2
MLFLOW_VENV := .venv-mlflow
MLFLOW := $(MLFLOW_VENV)/bin/mlflow

$(MLFLOW):
	$(PY) -m venv $(MLFLOW_VENV)
	$(MLFLOW_VENV)/bin/python -m pip install -q --upgrade pip
	$(MLFLOW_VENV)/bin/pip install -q mlflow==$(MLFLOW_VERSION)

mlflow-venv: $(MLFLOW)

# Sync to MLflow against a real `mlflow server` (one per test module, started by the tests).
test-mlflow: $(STAMP) $(MLFLOW)
	TEST_MLFLOW_BIN=$(abspath $(MLFLOW)) $(BIN)/python -m pytest -q -m mlflow tests/test_mlflow.py

bench-mlflow: $(STAMP) $(MLFLOW)
	TEST_MLFLOW_BIN=$(abspath $(MLFLOW)) $(BIN)/python benchmarks/bench_mlflow.py

test-nfs: $(STAMP)
	bash tests/nfs/run-all.sh

# Every benchmark and one table of all their figures; the peers (trackio, wandb offline) live in
# their own venv, never in the project's.
bench: $(STAMP) .venv-bench/.installed $(MLFLOW)
	TEST_MLFLOW_BIN=$(abspath $(MLFLOW)) $(BIN)/python benchmarks/run_all.py

.venv-bench/.installed:
	$(PY) -m venv .venv-bench
	.venv-bench/bin/pip install -q trackio==0.43.0 wandb==0.31.0
	touch $@

# Instructions per log() call under valgrind: repeatable on a busy machine (a few minutes).
bench-callgrind: $(STAMP)
	$(BIN)/python benchmarks/bench_log_callgrind.py

# The wheel (dist/localrun_tracker-<version>-py3-none-any.whl) for machines without the checkout.
# pip builds it with the build backend pyproject.toml names (hatchling), in an isolated env.
# Only the wheel: pip cannot build an sdist, and the checkout itself is the source.
dist: $(BIN)/python
	rm -f dist/localrun_tracker-*.whl
	$(BIN)/pip wheel -q --no-deps -w dist .

# What the targets above made: the venvs, the wheel, the tools' caches, npm's download. Never the
# committed vendor files (localrun/_server/static/vendor), nor any run.
clean:
	rm -rf $(VENV) .venv-bench $(MLFLOW_VENV) dist build ui/node_modules .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find localrun tests benchmarks -name __pycache__ -type d -prune -exec rm -rf {} +
