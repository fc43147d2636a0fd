# The two quick-start commands (`make run`, `make test`) work on a fresh clone with Python 3.11.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHROMIUM ?= /usr/bin/chromium
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1

.PHONY: install browser run test test-fast bench lint format clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e ".[dev,text,timeseries,audio,serve,interpret,tune,track,rl,minilm,detect]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/layerwise quickstart

# The report's browser test (tests/browser.py) drives Debian's chromium through Playwright, which
# never downloads a browser of its own. Installed once per machine (as root); if apt-get cannot,
# the test says why it skips (and fails under CI).
browser:
	@test -x $(CHROMIUM) || { \
	  echo "installing chromium (Debian) for the report's browser test"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  { apt-get update -q && apt-get install -y -q chromium; } >/dev/null \
	  || echo "warning: apt-get could not install chromium; the browser test will skip"; }

# Two workers: most tests train on one thread or wait on a subprocess, so one process leaves a
# core idle. A file stays on one worker (its module fixtures are built once).
test: $(STAMP) browser
	$(BIN)/python -m pytest -n 2 --dist loadfile

# The edit loop: unit tests only (no whole runs, no subprocesses), about a minute.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

bench: $(STAMP)
	$(BIN)/python -m pip install -q -e ".[bench]"
	$(BIN)/python benchmarks/run_all.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache test-artifacts
