# Everything a fresh machine with Python 3.11+ and make needs: each target sets itself up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# One stamp per level, each installed only by the targets that need it: running the service
# (install, demo, serve) needs the package alone; lint, typecheck and bench add the development
# tools (extra `dev`: pytest, moto, mypy, ruff, boto3, awscli ...); the test suite adds the
# local-model extras. `make demo` on a fresh clone so installs a dozen packages, not a hundred.
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
LOCAL_STAMP := $(VENV)/.installed-local
# The AWS SDK for JavaScript v3, a client the access tests drive (tests/js); skipped without npm.
JS_STAMP := tests/js/node_modules/.installed
# Debian's chromium, which the web console's browser tests drive (tests/console); a fresh CI
# machine lacks it. Installed with apt (as root, or through sudo) only when it is missing.
CHROMIUM := /usr/bin/chromium
# -qq: pip prints its errors only (no progress, no notices; a failed install still says why).
PIP := $(BIN)/python -m pip --disable-pip-version-check install -qq
# The local-model tests (extra `local-tests`) need PyTorch; 2.13.0's CPU build is the one this
# project's machines keep on disk, so installing it first avoids a multi-GB CUDA download.
TORCH ?= torch==2.13.0

# The PostgreSQL store's tests start a server of their own (tests/pg.py) from the machine's
# server binaries: Debian's postgresql packages (pg_trgm is in postgresql-contrib), installed
# here when missing (a fresh CI machine); as root, else through sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install dev demo test lint typecheck unit serve bench clean postgres-server netns-tools

install: $(RUN_STAMP)

dev: $(DEV_STAMP)

$(RUN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) -e .
	touch $@

$(DEV_STAMP): $(RUN_STAMP)
	$(PIP) -e '.[dev]'
	touch $@

$(JS_STAMP): tests/js/package.json tests/js/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix tests/js --no-audit --no-fund --loglevel=error && touch $(JS_STAMP); \
	else echo "npm not found: the JavaScript SDK tests will be skipped"; fi

$(CHROMIUM):
	@if command -v apt-get >/dev/null 2>&1; then \
		sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else echo "apt-get not found: install chromium, or the console's browser tests skip"; fi

$(LOCAL_STAMP): $(DEV_STAMP)
	$(PIP) '$(TORCH)'
	$(PIP) -e '.[dev,local-tests]'
	touch $@

postgres-server:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		echo "installing the PostgreSQL server for the tests"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq postgresql postgresql-contrib; \
	fi

# The multi-host test (tests/engine/test_multihost.py) puts workers in network namespaces of
# their own when it runs as root: iproute2's `ip` and `ss`, installed here when missing.
netns-tools:
	@if [ "$$(id -u)" = 0 ] && ! command -v ip >/dev/null 2>&1; then \
		echo "installing iproute2 for the multi-host test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2; \
	fi

demo: $(RUN_STAMP)
	$(BIN)/batchrock demo

serve: $(RUN_STAMP)
	$(BIN)/batchrock serve

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

unit: $(LOCAL_STAMP) $(JS_STAMP) $(CHROMIUM) postgres-server netns-tools
	$(BIN)/pytest -q

test: lint typecheck unit

bench: $(DEV_STAMP) postgres-server
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
