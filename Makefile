# trunkguard: `make demo` and `make test` set up everything they need on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo run test lint typecheck unit e2e bench sipp clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# SIPp (Debian's sip-tester) is the independent peer of the end-to-end tests and the benchmark.
sipp:
	@command -v sipp >/dev/null 2>&1 || { \
	  echo "installing SIPp (Debian package sip-tester)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq sip-tester >/dev/null; }
	@command -v sipp >/dev/null 2>&1 || { echo "SIPp is still missing: install Debian's sip-tester" >&2; exit 1; }

# Until the failover lab exists, the demo runs the router on its embedded default config.
demo: $(STAMP)
	$(BIN)/trunkguard run

run: demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy --strict src

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

e2e: $(STAMP) sipp
	$(BIN)/pytest -q tests/e2e

test: $(STAMP) sipp lint typecheck
	$(BIN)/pytest -q

bench: $(STAMP) sipp
	$(BIN)/python bench/proxy_rate.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
