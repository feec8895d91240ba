# The README's commands. Everything installs into .venv (Python) and node_modules (Azurite).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 7071
CHECKOV_VENV := .venv-checkov

.PHONY: run test lint lint-infra unit bench bench-instructions bench-traces clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# `make run`: the deployed dependencies, uvicorn and full MLflow (local traces), then serve.
$(VENV)/.run-installed: $(BIN)/python requirements.txt pyproject.toml
	$(BIN)/pip install --quiet -r requirements.txt -e '.[serve,local]'
	touch $@

$(VENV)/.dev-installed: $(VENV)/.run-installed requirements-dev.txt
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

# checkov (`make lint-infra`) pins many packages: its own virtual environment, never requirements-dev.txt.
$(CHECKOV_VENV)/.installed: infra/requirements-lint.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/pip install --quiet -r infra/requirements-lint.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --silent
	touch $@

run: $(VENV)/.run-installed
	$(BIN)/llmops serve --host $(HOST) --port $(PORT)

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check llmops
	$(BIN)/mypy

# Bicep under infra/: checkov parses and scans it offline; parse errors fail too (infra/lint.py).
lint-infra: $(CHECKOV_VENV)/.installed
	$(CHECKOV_VENV)/bin/python infra/lint.py

test: $(VENV)/.dev-installed node_modules/.installed lint lint-infra
	$(BIN)/python -m pytest -q

unit: $(VENV)/.dev-installed
	$(BIN)/python -m pytest -q tests/unit

bench: $(VENV)/.dev-installed
	$(BIN)/python bench/gateway_overhead.py

bench-instructions: $(VENV)/.dev-installed
	$(BIN)/python bench/instructions.py

bench-traces: $(VENV)/.dev-installed
	$(BIN)/python bench/trace_export.py

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) node_modules .mypy_cache .ruff_cache .pytest_cache
