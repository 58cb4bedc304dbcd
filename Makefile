# `make demo` and `make test` each create .venv and install what they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# the runtime alone (what `make demo` needs), then the test and lint tools on top (`make test`)
RUNTIME := $(VENV)/.runtime
# cargo builds the native core (native/): rustup installs it in ~/.cargo/bin, which a
# non-login shell may not have on its PATH
export PATH := $(HOME)/.cargo/bin:$(PATH)
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# setup.py generates the gRPC modules from proto/ and builds the Rust core (native/, by
# cargo) at install time: a .proto or .rs edit reinstalls
$(RUNTIME): pyproject.toml setup.py $(wildcard proto/heimdall/v1/*.proto) \
		native/Cargo.toml native/Cargo.lock $(wildcard native/src/*.rs) \
		$(wildcard native/src/*/*.rs) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUNTIME)

$(STAMP): $(RUNTIME)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(RUNTIME)
	$(BIN)/heimdall demo

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	cargo test --quiet --manifest-path native/Cargo.toml
	$(BIN)/python -m pytest -q --doctest-modules src tests

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	cargo fmt --check --manifest-path native/Cargo.toml
	cargo clippy --quiet --all-targets --manifest-path native/Cargo.toml -- -D warnings

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python benchmarks/bench_store.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache \
		src/heimdall/remote/_pb src/heimdall/*.so src/heimdall/*/*.so native/target
