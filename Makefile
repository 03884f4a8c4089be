# medsight: `make demo` trains and evaluates a first model; `make test` runs the whole test suite.
# Both create .venv and install what they need on a fresh machine.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# the project's shared data folder, when it sits beside the checkout (tests and benchmarks read it)
SHARED_DATA := $(wildcard $(CURDIR)/../shared/data)
ifneq ($(SHARED_DATA),)
export MEDSIGHT_DATA ?= $(SHARED_DATA)
endif

.PHONY: demo test lint bench bench-ingest orthanc chromium clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

demo: $(BIN)/.installed
	$(BIN)/medsight quickstart

lint: $(BIN)/.installed
	$(BIN)/ruff check medsight tests benchmarks

# Orthanc, the PACS of the interop tests (they start it themselves): installed from Debian when it is
# missing and we are root; otherwise a note (those tests then skip, or fail when CI=true).
ORTHANC_PLUGIN := /usr/share/orthanc/plugins/libOrthancDicomWeb.so
orthanc:
	@if { command -v Orthanc || [ -x /usr/sbin/Orthanc ]; } >/dev/null 2>&1 && [ -e $(ORTHANC_PLUGIN) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Orthanc for the PACS tests (apt-get install orthanc orthanc-dicomweb)"; \
		apt-get update -qq >/dev/null && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq orthanc orthanc-dicomweb >/dev/null; \
	else \
		echo "note: Orthanc is missing and this is not root: run 'sudo apt-get install -y orthanc orthanc-dicomweb'"; \
	fi

# Chromium, the browser of the web UI test (Playwright drives it; it never downloads its own): installed
# from Debian when it is missing and we are root; otherwise a note (the test then skips, or fails when CI=true).
CHROMIUM := /usr/bin/chromium
chromium:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Chromium for the web UI test (apt-get install chromium)"; \
		apt-get update -qq >/dev/null && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "note: Chromium is missing and this is not root: run 'sudo apt-get install -y chromium'"; \
	fi

test: $(BIN)/.installed lint orthanc chromium
	$(BIN)/python -m pytest -q

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/medmnist.py

bench-ingest: $(BIN)/.installed orthanc
	$(BIN)/python benchmarks/ingest.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache runs
