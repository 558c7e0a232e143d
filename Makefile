# Two commands for a fresh clone: `make demo` and `make test`. Both build .venv themselves.
# `demo` installs only what the demo needs (the `cli` extra: rich); `test` the `test` extra,
# which holds everything in `cli` too, so it marks both as installed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CLI_STAMP := $(VENV)/.installed-cli
TEST_STAMP := $(VENV)/.installed-test

.PHONY: test lint types unit demo wheel clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(CLI_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[cli]'
	touch $(CLI_STAMP)

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(TEST_STAMP) $(CLI_STAMP)

lint: $(TEST_STAMP)
	$(BIN)/ruff check asyncbatch tests benchmarks examples
	$(BIN)/ruff format --check asyncbatch tests benchmarks examples

types: $(TEST_STAMP)
	$(BIN)/mypy

unit: $(TEST_STAMP)
	$(BIN)/pytest -q

test: lint types unit

demo: $(CLI_STAMP)
	$(BIN)/asyncbatch demo

wheel: $(CLI_STAMP)
	$(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir dist .

clean:
	rm -rf $(VENV) build dist *.egg-info
