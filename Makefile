# Everything a fresh clone needs: `make test` builds .venv from requirements.lock and runs the suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install install-postgres browser lint typecheck check test bench demo clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c requirements.lock -e '.[dev]'
	touch $(STAMP)

# the console's browser tests drive Debian's headless Chromium through its chromedriver; installed
# once (CI is a fresh Debian machine running as root), a no-op when both are there
browser:
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; }

# PostgreSQL's server programs for the store tests on PostgreSQL (tools/pg_server.py starts a throwaway
# server): Debian keeps them under /usr/lib/postgresql/*/bin, not on PATH; nothing is done when present
install-postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; } || \
		echo "WARNING: PostgreSQL could not be installed: the store tests on PostgreSQL will be skipped"

# ruff's rule set and exceptions are in pyproject.toml ([tool.ruff]); it takes well under a second
lint: install
	$(BIN)/ruff check .

# pyright in basic mode on the head-end and the protocol (pyrightconfig.json, where construct's
# untyped `"name" / Field` and function-made fields are let through); the firmware is checked against
# the MicroPython stubs by tests/firmware/test_typecheck.py
typecheck: install
	$(BIN)/pyright

# everything CI runs: lint, types, the firmware against its stubs, the whole suite
check: lint typecheck test

test: install install-postgres lint browser
	$(BIN)/python -m pytest -n 2
	NUMBA_DISABLE_JIT=1 $(BIN)/python -m pytest -q tests/tariff -p no:cacheprovider

bench: install install-postgres
	$(BIN)/python -m tools.bench.run

demo: install
	$(BIN)/python -m tools.demo

clean:
	rm -rf $(VENV) bench-results.json
