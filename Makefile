# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv if missing and
# installs what it needs (pyproject.toml pins lower bounds).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip

.PHONY: demo test test-fast lint bench browser-deps clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Pumice needs Python >= 3.11; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV) || { apt-get update -qq && apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }
	$(PIP) install -q --upgrade pip

$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(PIP) install -q -e .
	@touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(PIP) install -q -e '.[dev]'
	@touch $@ $(VENV)/.runtime

demo: $(VENV)/.runtime
	$(BIN)/pumice demo demo-output

# Debian's chromium for the browser tests (Playwright cannot download a browser here).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 \
		|| echo "chromium could not be installed: browser tests will be skipped"; }

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests benchmarks

test: $(VENV)/.dev browser-deps lint
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile --durations=30

# The inner loop: everything but real-data, browser and other slow tests.
test-fast: $(VENV)/.dev lint
	$(BIN)/python -m pytest -q -m "not slow" -x

bench: $(VENV)/.dev
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) demo-output bench-output
