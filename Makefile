# Two commands on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# The compiled detectors' sources too (setup.py builds them in place): an edit to one rebuilds them, where the package
# would otherwise fall back to their .py at half the speed (analytics/scorers/compiled.py).
COMPILED_SOURCES = $(wildcard analytics/scorers/*.pxd) $(patsubst %.pxd,%.py,$(wildcard analytics/scorers/*.pxd))
STAMP   = $(VENV)/.installed-$(shell cat pyproject.toml setup.py $(COMPILED_SOURCES) | sha1sum | cut -c1-12)

# Debian packages the tests run for real: binary -> package. gcc builds the compiled detectors (setup.py), which
# tests/analytics/test_compiled.py holds to the pure-Python ones: `make test` installs these before the package.
SYSTEM_DEPS = prometheus:prometheus promtool:prometheus \
              prometheus-alertmanager:prometheus-alertmanager amtool:prometheus-alertmanager \
              victoria-metrics:victoria-metrics chromium:chromium pdftotext:poppler-utils gcc:gcc
# Libraries (no binary to look for): WeasyPrint's Pango and a font for the PDF report.
SYSTEM_LIBS = libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core

.PHONY: install system-deps bench-deps demo test check bench clean

$(STAMP): pyproject.toml setup.py $(COMPILED_SOURCES)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,analytics]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

system-deps:
	@missing=""; for pair in $(SYSTEM_DEPS); do \
	  bin=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$bin >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	for pkg in $(SYSTEM_LIBS); do dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	missing=$$(echo $$missing | tr ' ' '\n' | sort -u | tr '\n' ' '); \
	if [ -n "$${missing// /}" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing; \
	fi

# The peers and tools the benchmarks run against (bench/vs_blackbox.py, bench/scale_collector.py); not needed by the tests.
BENCH_DEPS = prometheus-blackbox-exporter:prometheus-blackbox-exporter nginx:nginx-light wrk:wrk

bench-deps:
	@$(MAKE) --no-print-directory system-deps SYSTEM_DEPS="$(BENCH_DEPS)" SYSTEM_LIBS=

demo: install
	@echo "flowprobe demo: starting the demo targets and the collector (Ctrl-C stops it)"
	$(BIN)/flowprobe demo

test: system-deps install
	$(BIN)/ruff check collector analytics tests bench
	$(BIN)/pytest -rs

check: install
	FLOWPROBE_PROBE_EMAIL=x FLOWPROBE_PROBE_PASSWORD=x $(BIN)/flowprobe check workflows/

bench: install bench-deps
	$(BIN)/python bench/collector_throughput.py

clean:
	rm -rf $(VENV) data .pytest_cache build analytics/scorers/*.c analytics/scorers/*.so analytics/scorers/_compiled.json
