# The two set-up commands: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: serve test lint bench bench-upstream bench-runners bench-soak bench-batching bench-scaling

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

serve: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[local]'
	$(BIN)/portway serve $(ARGS)

test: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[local,embeddings,images,test]'
	npm ci --prefix examples/node --no-audit --no-fund --silent
	$(MAKE) lint
	$(BIN)/pytest -q

lint:
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy

bench: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[local,test]'
	$(BIN)/python bench/run.py

LITELLM := .bench/litellm/bin/litellm

$(LITELLM):
	$(PYTHON) -m venv .bench/litellm
	.bench/litellm/bin/pip install --quiet -r bench/litellm-requirements.txt

bench-upstream: $(BIN)/python $(LITELLM)
	$(BIN)/pip install --quiet -e '.[local,test]'
	$(BIN)/python bench/upstream.py --litellm $(LITELLM)

bench-runners: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[local,test]'
	$(BIN)/python bench/runners.py

bench-soak: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[local,embeddings,test]'
	$(BIN)/python bench/soak.py $(ARGS)

bench-batching: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[local,test]'
	$(BIN)/python bench/batching.py $(ARGS)

bench-scaling: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[local,test]'
	$(BIN)/python bench/scaling.py $(ARGS)
