# Replicator — developer tasks. `make test` sets everything up from a fresh clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install servers test test-fast lint format clean

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

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
