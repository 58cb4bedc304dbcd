# `make demo` and `make test` each create .venv and install what they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# the runtime alone (what `make demo` needs), then the test and lint tools on top (`make test`)
RUNTIME := $(VENV)/.runtime
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# setup.py generates the gRPC modules from proto/ and compiles the C paths at install time:
# a .proto, .c or .h edit reinstalls
$(RUNTIME): pyproject.toml setup.py $(wildcard proto/heimdall/v1/*.proto) \
		$(wildcard src/heimdall/*/*.c) $(wildcard src/heimdall/*/*.h) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUNTIME)

$(STAMP): $(RUNTIME)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(RUNTIME)
	$(BIN)/heimdall demo

# numba's on-disk cache can miss an edit of the kernels: key it by their content
KERNELS_HASH = $(shell cat src/heimdall/window/_kernels.py | sha1sum | cut -c1-12)
export NUMBA_CACHE_DIR := $(CURDIR)/.venv/numba-cache/$(KERNELS_HASH)

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest -q --doctest-modules src tests

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_store.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache \
		src/heimdall/remote/_pb src/heimdall/*/*.so
