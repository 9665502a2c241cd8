# The two commands of the README. Each creates .venv (if missing) and installs the project from its own
# pyproject.toml, so a fresh clone needs nothing but python3 (>= 3.11) and make.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test install install-dev lint bench

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e .

install-dev: $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'

## demo: simulate a city, replay it on embedded defaults (no Kafka, no ClickHouse server), print a summary
demo: install
	$(BIN)/monitor demo --out demo-out

lint: install-dev
	$(BIN)/ruff check
	$(BIN)/mypy

## test: ruff, mypy and the whole pytest suite (starts its own broker and tools), on PYTEST_WORKERS processes.
## --dist loadscope: a test module runs whole in one process (its module fixtures are built once);
## --no-loadscope-reorder: modules start in collection order, so the long Kafka modules start first;
## --durations=15: the slowest tests are in every CI log (the suite must stay under 10 minutes).
PYTEST_WORKERS ?= 2
test: install-dev
	bash deploy/ensure-tools.sh
	$(BIN)/ruff check
	$(BIN)/mypy
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadscope --no-loadscope-reorder --durations=15

## bench: throughput, latency and memory against design §6 (prints the README table; < 10 min on 2 cores)
bench: install-dev
	$(BIN)/python -m bench $(BENCH_ARGS)
