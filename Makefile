# The commands of the README: `make demo`, `make check` (the fast tier: lint, types and
# every test that needs no server process and is not marked slow) and `make test` (everything, real servers
# included). Each creates or refreshes the virtual environment (.venv) whenever
# pyproject.toml, setup.py or the C extension changes; a failed install stops the build and prints pip's log.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo check test lint typecheck unit bench bench-quick clean system-deps

$(STAMP): pyproject.toml setup.py mkit_transport/sync/_lstat.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip >$(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; exit 1; }
	$(PY) -m pip install --quiet -e '.[dev]' >$(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; exit 1; }
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

# The fast tier: no sshd, gunicorn, moto or SeaweedFS process is started (tests that need
# one carry the `server` marker, see tests/support/server_marker.py), so it runs on any
# machine with Python; about a minute and a half of tests on two cores.
check: lint typecheck
	$(PY) -m pytest -m "not server and not slow"

test: lint typecheck unit

# system-deps: bench/bench_chunked.py runs restic and borg beside our push
bench: $(STAMP) system-deps
	$(PY) bench/run.py

bench-quick: $(STAMP) system-deps
	$(PY) bench/run.py --quick

clean:
	rm -rf $(VENV) build *.egg-info
