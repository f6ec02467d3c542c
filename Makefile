# The two commands of the README: `make demo` and `make test`. Both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)

.PHONY: install demo test test-unit lint bench schemas clean

$(STAMP): pyproject.toml tools/get-compose.sh
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	tools/get-compose.sh $(VENV)/tools
	@rm -f $(VENV)/.installed-*; touch $@

install: $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Everything installed, every test run (lint first: strict typing is part of the contract).
test: lint
	$(BIN)/python -m pytest

test-unit: install
	$(BIN)/python -m pytest -m "not e2e"

bench: install
	$(BIN)/python bench/bench_validate.py --write bench/RESULTS.md

# Regenerate the committed JSON Schemas (tests fail when they drift from the models).
schemas: install
	$(BIN)/vpsctl schema --out schemas

# Until the sandbox, apply and audit issues land, the demo shows the spec pipeline on the
# sandbox inventory: fresh secrets, validation, and the merged spec with secrets masked.
demo: install
	$(BIN)/vpsctl secrets generate -i inventory/sandbox
	$(BIN)/vpsctl validate -i inventory/sandbox
	$(BIN)/vpsctl show -i inventory/sandbox | head -n 60
	@echo "demo: inventory/sandbox is valid. Full spec: $(BIN)/vpsctl show -i inventory/sandbox" >&2

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
