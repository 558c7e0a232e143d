# Two commands for a fresh clone: `make demo` and `make test`. Both build .venv themselves.
# `demo` installs only what the demo needs (the `cli` extra: rich); `test` the `test` extra,
# which holds everything in `cli` too, so it marks both as installed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CLI_STAMP := $(VENV)/.installed-cli
TEST_STAMP := $(VENV)/.installed-test

.PHONY: test test-airflow lint types unit demo wheel clean

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

# Airflow pins much of the stack, so its tests run in a venv of their own.
AIRFLOW_VENV := .venv-airflow
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed

$(AIRFLOW_STAMP): pyproject.toml
	$(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet -e '.[test,airflow]'
	touch $(AIRFLOW_STAMP)

test-airflow: $(AIRFLOW_STAMP)
	$(AIRFLOW_VENV)/bin/mypy asyncbatch/airflow.py tests/test_airflow.py tests/test_airflow_dag.py tests/test_airflow_job.py tests/airflow_dags
	$(AIRFLOW_VENV)/bin/pytest -q tests/test_airflow.py tests/test_airflow_dag.py tests/test_airflow_job.py

demo: $(CLI_STAMP)
	$(BIN)/asyncbatch demo

wheel: $(CLI_STAMP)
	$(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir dist .

clean:
	rm -rf $(VENV) $(AIRFLOW_VENV) build dist *.egg-info
