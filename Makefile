# trunkguard: `make demo` and `make test` set up everything they need on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo run test lint typecheck unit e2e bench sipp chromium lab clean

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

# Headless Chromium checks that the lab's HTML report renders its charts.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Chromium (Debian package chromium) for the report test"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

# The failover lab's kill-primary scenario, live, on the embedded lab config (about 40 s).
demo: $(STAMP)
	$(BIN)/trunkguard lab kill-primary --out lab-results

# The router alone, on its embedded default config.
run: $(STAMP)
	$(BIN)/trunkguard run

# Every lab scenario and the summary table quoted in the README (under 10 minutes).
lab: $(STAMP)
	$(BIN)/trunkguard lab all --no-live --out lab-results

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy --strict src

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

e2e: $(STAMP) sipp
	$(BIN)/pytest -q tests/e2e

test: $(STAMP) sipp chromium lint typecheck
	$(BIN)/pytest -q

bench: $(STAMP) sipp
	$(BIN)/python bench/proxy_rate.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache lab-results
