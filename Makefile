# The README's commands. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PYTHON := $(VENV)/bin/python
BIN := $(VENV)/bin
# Installed once per change of pyproject.toml; delete .venv to start over.
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help install demo test bench lint redis-server

help: ## show the commands
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: redis-server $(STAMP) ## create .venv and install InfraPrism with its dev extra (idempotent)

redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
		echo "redis-server is missing: installing it with apt-get"; \
		$(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server; }

$(STAMP): pyproject.toml
	@python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
		echo "InfraPrism needs Python >= 3.11; python3 is $$(python3 --version)"; exit 1; }
	@test -x $(PYTHON) || python3 -m venv $(VENV) || { \
		rm -rf $(VENV); echo "python3 -m venv failed: installing python3-venv"; \
		$(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv \
		&& python3 -m venv $(VENV); }
	$(PYTHON) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: install ## run the whole stack on demo data (Ctrl-C stops it)
	$(BIN)/infraprism dev --demo

test: install ## run the whole test suite
	$(BIN)/pytest -q

bench: install ## run the ingest and query benchmarks
	$(PYTHON) bench/ingest.py
	$(PYTHON) bench/query.py

# mypy names modules by their path, so it checks a view of the installed
# namespace: build/typecheck/infraprism links infraprism/'s entries and the two
# folders mapped into it (pyproject's package-dir).
TYPECHECK := build/typecheck/infraprism

lint: install ## ruff (rules and formatting) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@rm -rf $(TYPECHECK) && mkdir -p $(TYPECHECK)
	@for entry in infraprism/*; do ln -s "$(CURDIR)/$$entry" $(TYPECHECK)/; done
	@ln -s "$(CURDIR)/pipeline" $(TYPECHECK)/pipeline && ln -s "$(CURDIR)/api" $(TYPECHECK)/api
	cd build/typecheck && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml -p infraprism
