# Two commands on a fresh machine with Python 3.11 (README.md, "Quick start"):
#   make demo       create .venv, install, run the built-in demo study, write the report
#   make test       create or update .venv, lint, run the test suite
# and for the developer loop:
#   make test-fast  lint, then the suite without the slow end-to-end tests (pytest -m "not slow", 2 processes)
#   make lint       ruff over the repository (its rules: pyproject.toml, [tool.ruff])
#   make bench      the metric kernels' benchmark (docs/performance.md)
#   make clean      remove .venv, ./dynstudy-store and pytest's cache
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo lint test test-fast bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/dynstudy run demo

lint: $(STAMP)
	$(BIN)/ruff check .

# the fast tests start no Ray and share nothing, so they run in 2 processes; the slow ones (Ray clusters, drills) one
# at a time
test: lint
	$(BIN)/python -m pytest -q -m "not slow" -n 2 && $(BIN)/python -m pytest -q -m slow

test-fast: lint
	$(BIN)/python -m pytest -q -m "not slow" -n 2

bench: $(STAMP)
	$(BIN)/python bench/bench_dynamics.py

clean:
	rm -rf $(VENV) dynstudy-store .pytest_cache
