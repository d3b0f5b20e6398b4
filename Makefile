# Everything a fresh clone needs: `make test` builds .venv from requirements.lock and runs the suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test bench demo typecheck clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c requirements.lock -e '.[dev]'
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -n 2
	NUMBA_DISABLE_JIT=1 $(BIN)/python -m pytest -q tests/tariff -p no:cacheprovider

bench: install
	$(BIN)/python -m tools.bench.run

demo: install
	$(BIN)/python -m tools.demo

clean:
	rm -rf $(VENV) bench-results.json
