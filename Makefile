# trunkguard: `make demo` and `make test` set up everything they need on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
FUZZ_STAMP := $(VENV)/.fuzz-stamp

.PHONY: bench-decks demo run test test-stressed lint typecheck unit e2e bench fuzz sipp dnsmasq kamailio sipvicious chromium stress-ng systemd-analyze postgresql etcd halab-tools ha-lab wheel lab clean

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

# dnsmasq is the DNS server of the DNS end-to-end tests. Debian's dnsmasq-base is the
# program alone; the dnsmasq package would also install and start a system service.
dnsmasq:
	@command -v dnsmasq >/dev/null 2>&1 || test -x /usr/sbin/dnsmasq || { \
	  echo "installing dnsmasq (Debian package dnsmasq-base)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq dnsmasq-base >/dev/null; }
	@command -v dnsmasq >/dev/null 2>&1 || test -x /usr/sbin/dnsmasq || { \
	  echo "dnsmasq is still missing: install Debian's dnsmasq-base" >&2; exit 1; }

# Kamailio is the end-to-end tests' carrier with a registrar, digest auth and TLS (its TLS
# module is a package of its own). Debian installs it in /usr/sbin.
KAMAILIO_FOUND = { command -v kamailio || test -x /usr/sbin/kamailio; } >/dev/null 2>&1 && \
	ls /usr/lib/*/kamailio/modules/tls.so /usr/lib/kamailio/modules/tls.so 2>/dev/null | grep -q .
kamailio:
	@$(KAMAILIO_FOUND) || { \
	  echo "installing Kamailio (Debian packages kamailio, kamailio-tls-modules)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq kamailio kamailio-tls-modules >/dev/null; }
	@$(KAMAILIO_FOUND) || { echo "Kamailio is still missing: install Debian's kamailio and kamailio-tls-modules" >&2; exit 1; }

# SIPVicious (Debian's sipvicious: svmap, svwar, svcrack) is the scanner the edge tests run
# against the router, as someone looking for a PBX to abuse would.
SIPVICIOUS_FOUND = command -v svmap && command -v svwar && command -v svcrack
sipvicious:
	@{ $(SIPVICIOUS_FOUND); } >/dev/null 2>&1 || { \
	  echo "installing SIPVicious (Debian package sipvicious)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq sipvicious >/dev/null; }
	@{ $(SIPVICIOUS_FOUND); } >/dev/null 2>&1 || { echo "SIPVicious is still missing: install Debian's sipvicious" >&2; exit 1; }

# PostgreSQL (Debian's server: /usr/lib/postgresql/VERSION/bin/initdb, pg_ctl) is the call
# records' database in the tests and the benchmark; each run makes its own server in a
# temporary directory. Only the programs are needed: the packaged cluster is not used.
POSTGRES_FOUND = ls /usr/lib/postgresql/*/bin/initdb /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1
postgresql:
	@$(POSTGRES_FOUND) || { \
	  echo "installing PostgreSQL (Debian package postgresql)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq postgresql >/dev/null; }
	@$(POSTGRES_FOUND) || { echo "PostgreSQL is still missing: install Debian's postgresql" >&2; exit 1; }

# etcd (Debian's etcd-server) holds the HA tests' leadership and shared state; each test
# runs its own members in a temporary directory. Only the program is needed: the packaged
# service is not used (nor started where systemd is not PID 1).
etcd:
	@command -v etcd >/dev/null 2>&1 || { \
	  echo "installing etcd (Debian package etcd-server)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq etcd-server >/dev/null; }
	@command -v etcd >/dev/null 2>&1 || { echo "etcd is still missing: install Debian's etcd-server" >&2; exit 1; }

# Headless Chromium checks that the lab's HTML report renders its charts, and drives the
# dashboard (Playwright, on this chromium: no browser download).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Chromium (Debian package chromium) for the report and dashboard tests"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

# systemd-analyze checks the service unit (verify, security --offline). Debian's systemd
# package has it; it is installed only when missing, and systemd need not be PID 1.
systemd-analyze:
	@command -v systemd-analyze >/dev/null 2>&1 || { \
	  echo "installing systemd-analyze (Debian package systemd)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq systemd >/dev/null; }
	@command -v systemd-analyze >/dev/null 2>&1 || { echo "systemd-analyze is still missing: install Debian's systemd" >&2; exit 1; }

# The HA lab (network namespaces): tcpdump on the lab's bridge, arping for the service
# address's gratuitous ARP (Debian's arping is Habets'), and etcd (above). Installed only
# when missing.
HALAB_FOUND = command -v tcpdump && command -v arping
halab-tools: etcd
	@{ $(HALAB_FOUND); } >/dev/null 2>&1 || { \
	  echo "installing the HA lab's tools (Debian packages tcpdump, arping)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq tcpdump arping >/dev/null; }
	@{ $(HALAB_FOUND); } >/dev/null 2>&1 || { echo "the HA lab's tools are still missing: install Debian's tcpdump and arping" >&2; exit 1; }

# stress-ng keeps a core busy for make test-stressed.
stress-ng:
	@command -v stress-ng >/dev/null 2>&1 || { \
	  echo "installing stress-ng (Debian package stress-ng) for make test-stressed"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq stress-ng >/dev/null; }
	@command -v stress-ng >/dev/null 2>&1 || { echo "stress-ng is still missing: install Debian's stress-ng" >&2; exit 1; }

# The failover lab's kill-primary scenario, live, on the embedded lab config (about 50 s),
# with the dashboard on loopback: its link is printed 10 s before the calls start.
demo: $(STAMP)
	$(BIN)/trunkguard lab kill-primary --out lab-results --dashboard

# The router alone, on its embedded default config.
run: $(STAMP)
	$(BIN)/trunkguard run

# The HA lab (network namespaces, root): the harness, then issue 12's scenarios with 2,000
# calls around the kill -9, each printing its figures (about 2 minutes).
ha-lab: $(STAMP) sipp halab-tools
	HALAB_CALLS=2000 $(BIN)/pytest -q -s tests/e2e/test_netns_lab.py tests/e2e/test_ha_lab.py

# Every lab scenario and the summary table quoted in the README (under 10 minutes).
lab: $(STAMP)
	$(BIN)/trunkguard lab all --no-live --out lab-results

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy --strict src

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

e2e: $(STAMP) sipp dnsmasq kamailio sipvicious chromium systemd-analyze postgresql etcd halab-tools
	$(BIN)/pytest -q tests/e2e

test: $(STAMP) sipp dnsmasq kamailio sipvicious chromium systemd-analyze postgresql etcd halab-tools lint typecheck
	$(BIN)/pytest -q --durations=20

# make test with one of the two cores kept busy, as CI's machine often is. stress-ng is
# stopped however make test ends; its own --timeout is the backstop.
test-stressed: stress-ng
	@stress-ng --cpu 1 --timeout 30m --quiet & stress=$$!; \
	  trap 'kill $$stress 2>/dev/null; wait $$stress 2>/dev/null' EXIT; \
	  trap 'exit 130' INT TERM; \
	  $(MAKE) --no-print-directory test

bench: $(STAMP) sipp postgresql
	$(BIN)/python bench/proxy_rate.py
	$(BIN)/python bench/carrier_auth.py
	$(BIN)/python bench/overload.py
	$(BIN)/python bench/metrics.py
	$(BIN)/python bench/records.py
	$(BIN)/python bench/dashboard_cost.py
	$(BIN)/python bench/alerts.py
	$(BIN)/python bench/agi.py
	$(BIN)/python bench/dialer.py
	$(BIN)/python bench/quality.py

# Rate decks at scale (docs/routing-index.md): 3 and 10 decks of 1,000,000 prefixes,
# load time, memory and plan p50/p99; a few minutes each (decks kept in /tmp between runs).
bench-decks: $(STAMP)
	$(BIN)/python bench/deck_load.py --workdir /tmp/trunkguard-bench-decks
	$(BIN)/python bench/deck_load.py --carriers 10 --budget 900 --workdir /tmp/trunkguard-bench-decks

# The same SIPp load through Kamailio's dispatcher (bench/kamailio-dispatcher.cfg), then
# through trunkguard, and the ratios (docs/bench-compare.md; 10 to 20 minutes).
# COMPARE_ARGS passes options, e.g. make bench-compare COMPARE_ARGS="--json compare.json".
.PHONY: bench-compare
bench-compare: $(STAMP) sipp kamailio
	$(BIN)/python bench/compare.py $(COMPARE_ARGS)

# The wheel to install on a server (docs/service.md), in dist/.
wheel: $(STAMP)
	$(BIN)/pip wheel --quiet --disable-pip-version-check --no-deps -w dist .

# atheris is the fuzz extra, installed here only: make test does not need it.
$(FUZZ_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev,fuzz]'
	touch $(FUZZ_STAMP)

# 1,000,000 fuzzed inputs through the parser and the proxy core, one process (about 30 minutes).
fuzz: $(FUZZ_STAMP)
	$(BIN)/python bench/fuzz.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache lab-results
