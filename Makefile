# Two commands on a fresh machine with Python 3.11 (README.md, "Quick start"):
#   make demo       create .venv, install, run the built-in demo study, write the report
#   make test       create or update .venv, run the test suite
# and for the developer loop:
#   make test-fast  the suite without the slow end-to-end tests (pytest -m "not slow")
#   make bench      the metric kernels' benchmark (docs/performance.md)
#   make clean      remove .venv, ./dynstudy-store and pytest's cache
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test test-fast bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/dynstudy run demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python bench/bench_dynamics.py

clean:
	rm -rf $(VENV) dynstudy-store .pytest_cache
