# Everything a fresh machine with Python 3.11+ and make needs: each target sets itself up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCAL_STAMP := $(VENV)/.installed-local
# The AWS SDK for JavaScript v3, a client the access tests drive (tests/js); skipped without npm.
JS_STAMP := tests/js/node_modules/.installed
# The local-model tests (extra `local-tests`) need PyTorch; 2.13.0's CPU build is the one this
# project's machines keep on disk, so installing it first avoids a multi-GB CUDA download.
TORCH ?= torch==2.13.0

.PHONY: install demo test lint typecheck unit serve bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(LOCAL_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet '$(TORCH)'
	$(BIN)/python -m pip install --quiet -e '.[dev,local-tests]'
	touch $(LOCAL_STAMP)

$(JS_STAMP): tests/js/package.json tests/js/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix tests/js --no-audit --no-fund --loglevel=error && touch $(JS_STAMP); \
	else echo "npm not found: the JavaScript SDK tests will be skipped"; fi

demo: $(STAMP)
	$(BIN)/batchrock demo

serve: $(STAMP)
	$(BIN)/batchrock serve

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(LOCAL_STAMP) $(JS_STAMP)
	$(BIN)/pytest -q

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
