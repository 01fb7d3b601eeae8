# The two commands of the README: `make demo` and `make test`. Both create or refresh
# the virtual environment (.venv) whenever pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench bench-quick clean system-deps

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip 2>&1 | grep -v "is ignored" || true
	$(PY) -m pip install --quiet -e '.[dev]' 2>&1 | grep -v "is ignored" || true
	$(PY) -c "import mkit_transport, pytest, mypy, ruff"
	touch $(STAMP)

system-deps:
	sh scripts/system-deps.sh

demo: $(STAMP)
	$(PY) examples/demo.py

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(STAMP)
	$(PY) -m mypy

unit: $(STAMP) system-deps
	$(PY) -m pytest

test: lint typecheck unit

bench: $(STAMP)
	$(PY) bench/run.py

bench-quick: $(STAMP)
	$(PY) bench/run.py --quick

clean:
	rm -rf $(VENV) build *.egg-info
