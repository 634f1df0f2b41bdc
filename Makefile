# Every target creates .venv when missing and installs the project into it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-nfs lint bench clean

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

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 tests

lint: $(STAMP)
	$(BIN)/ruff check localrun tests $(wildcard benchmarks examples)
	$(BIN)/ruff format --check localrun tests $(wildcard benchmarks examples)
	$(BIN)/mypy

test-nfs: $(STAMP)
	bash tests/nfs/run-all.sh

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_log.py
	$(BIN)/python benchmarks/bench_resume.py

clean:
	rm -rf $(VENV) localruns .pytest_cache .mypy_cache .ruff_cache
