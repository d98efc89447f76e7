# Replicator — developer tasks. `make test` sets everything up from a fresh clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install servers test test-fast lint format clean bench demo

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# Database servers the test suite starts in temporary folders (installed only when missing).
servers:
	@scripts/ensure-servers.sh

test: install servers
	$(BIN)/pytest

# Unit tests only: no servers needed.
test-fast: install
	$(BIN)/pytest tests/unit

lint: install
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix src tests
	$(BIN)/ruff format src tests

# Replicator vs native logical replication on a pgbench database (bench/README.md).
# Options: make bench BENCH_ARGS="--scale 1 --duration 5"
bench: install servers
	$(BIN)/python -m bench $(BENCH_ARGS)

# A guided tour: a sample shop copied between two throw-away servers while it takes orders,
# then verified row by row (demo/__init__.py). Options: make demo DEMO_ARGS="--duration 5"
demo: install servers
	$(BIN)/python -m demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
