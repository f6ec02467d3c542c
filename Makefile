# The two commands of the README: `make demo` and `make test`. Both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)

.PHONY: install system demo test test-unit lint bench schemas clean

$(STAMP): pyproject.toml tools/get-compose.sh
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	tools/get-compose.sh $(VENV)/tools
	@rm -f $(VENV)/.installed-*; touch $@

install: $(STAMP)

# A Docker engine and debootstrap on this machine, for the sandbox VPS and the stand-in
# images (a fresh machine has only a docker client), and shellcheck for the box scripts'
# test. vpsctl starts dockerd when needed.
system:
	@if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null \
	  || ! command -v shellcheck >/dev/null; then \
	  echo "installing docker.io, debootstrap and shellcheck (Debian packages)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    docker.io debootstrap shellcheck >/dev/null; \
	fi

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Everything installed, every test run (lint first: strict typing is part of the contract).
# The end-to-end tests build the stand-in images and run sandbox boxes on this machine.
test: lint system
	$(BIN)/python -m pytest --durations=15

test-unit: install
	$(BIN)/python -m pytest -m "not e2e"

bench: install
	$(BIN)/python bench/bench_validate.py --write bench/RESULTS.md

# Regenerate the committed JSON Schemas (tests fail when they drift from the models).
schemas: install
	$(BIN)/vpsctl schema --out schemas

# The example studio on a local sandbox VPS: a box, fresh secrets, a full apply (bootstrap,
# stand-in images shipped, every stack health-gated through Caddy, the audit at its end),
# the audit again on its own, and a plan that must find nothing left to do.
demo: install system
	$(BIN)/vpsctl sandbox up
	$(BIN)/vpsctl sandbox up --name backup
	$(BIN)/vpsctl secrets generate -i inventory/sandbox
	$(BIN)/vpsctl apply -i inventory/sandbox -y
	$(BIN)/vpsctl backup -i inventory/sandbox --init
	$(BIN)/vpsctl audit -i inventory/sandbox --brief
	$(BIN)/vpsctl plan -i inventory/sandbox
	$(BIN)/vpsctl sandbox status
	@echo "" >&2
	@echo "demo: the studio runs on the sandbox box. Look at it:" >&2
	@echo "  $(BIN)/vpsctl audit -i inventory/sandbox      # every check, its value and bar" >&2
	@echo "  $(BIN)/vpsctl plan -i inventory/sandbox -v    # every file and stack, and why" >&2
	@echo "  ssh -i .vpsctl/sandboxes/default.key -p PORT root@127.0.0.1 docker ps" >&2
	@echo "  curl --cacert .vpsctl/sandboxes/pebble/roots.pem --resolve documint.lumen.test:HTTPS_PORT:127.0.0.1 https://documint.lumen.test:HTTPS_PORT/" >&2
	@echo "  $(BIN)/vpsctl backup -i inventory/sandbox --list   # snapshots on the backup box" >&2
	@echo "  $(BIN)/vpsctl drill -i inventory/sandbox      # rebuild on a throwaway box, timed" >&2
	@echo "  $(BIN)/vpsctl sandbox down; $(BIN)/vpsctl sandbox down --name backup" >&2

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
