# Every way to run tiffin's checks, examples and benchmarks. CI calls `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of PyTorch; a bare `torch` requirement would pull the CUDA build.
TORCH  ?= torch==2.13.0
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: run test lint typecheck unit bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

$(VENV)/.run-deps: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[sklearn]'
	touch $@

$(VENV)/.test-deps: pyproject.toml | $(BIN)/python
	$(PIP) install '$(TORCH)'
	$(PIP) install -e '.[test]'
	touch $@ $(VENV)/.run-deps

## run: set up .venv and run the quickstart end to end: train, save, list, serve, call, stop
run: $(VENV)/.run-deps
	$(BIN)/python examples/quickstart/train.py
	$(BIN)/tiffin models list iris
	$(BIN)/python examples/quickstart/serve_and_call.py

## test: set up .venv with test extras, then lint, type-check and run every test
test: $(VENV)/.test-deps lint typecheck unit

lint: $(VENV)/.test-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.test-deps
	$(BIN)/mypy

unit: $(VENV)/.test-deps
	$(BIN)/pytest

## bench: run the benchmark suite, about 30 minutes (QUICK=1: about 5); results and the
##        report in bench/results/; needs wrk and taskset, makes bench/.venv-* on first run;
##        model store save/load against cp, push/pull against the S3 client library
bench: $(VENV)/.test-deps
	$(BIN)/python bench/model_store_io.py $(if $(QUICK),--size-mib 256 --repeat 3)
	$(BIN)/python bench/remote_io.py $(if $(QUICK),--size-mib 256 --repeat 1)
	$(BIN)/python -m bench.run $(if $(QUICK),--quick)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache src/*.egg-info
