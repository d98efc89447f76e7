# Replicator — developer tasks. `make test` sets everything up from a fresh clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install servers bench-tools test test-fast lint format clean bench bench-mysql bench-kafka demo

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# Servers the test suite starts in temporary folders (installed only when missing): the
# database servers from Debian packages, Kafka's jars from Maven Central; and the tools the
# operations tests drive (headless Chromium with chromedriver, promtool).
servers:
	@scripts/ensure-servers.sh
	@scripts/ensure-kafka.sh
	@scripts/ensure-test-tools.sh

test: install servers
	$(BIN)/pytest

# Unit tests only: no servers needed.
test-fast: install
	$(BIN)/pytest tests/unit

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/mypy bench

format: install
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

# Tools the benchmarks need besides the servers: sysbench (installed only when missing).
bench-tools:
	@scripts/ensure-bench-tools.sh

# The three benchmarks, one after the other (bench/README.md): Replicator vs native logical
# replication on pgbench, Replicator vs pg_chameleon from MariaDB on sysbench, then
# PostgreSQL -> Kafka -> PostgreSQL (watcher + syncer) vs native logical replication.
# Options: make bench BENCH_ARGS="--scale 1 --duration 5" BENCH_MYSQL_ARGS="--duration 5"
#          BENCH_KAFKA_ARGS="--rows 100000"
bench: install servers bench-tools
	$(BIN)/python -m bench $(BENCH_ARGS)
	$(BIN)/python -m bench.mysql $(BENCH_MYSQL_ARGS)
	$(BIN)/python -m bench.kafka $(BENCH_KAFKA_ARGS)

# MariaDB -> PostgreSQL: Replicator vs pg_chameleon (its venv is made on the first run).
# Options: make bench-mysql BENCH_MYSQL_ARGS="--table-size 50000 --duration 10"
bench-mysql: install servers bench-tools
	$(BIN)/python -m bench.mysql $(BENCH_MYSQL_ARGS)

# PostgreSQL -> Kafka -> PostgreSQL: Replicator's watcher and syncer vs native logical
# replication, and Debezium's connector as a peer watcher (its jars are fetched on first use).
# Options: make bench-kafka BENCH_KAFKA_ARGS="--rows 100000 --partitions 3"
bench-kafka: install servers
	$(BIN)/python -m bench.kafka $(BENCH_KAFKA_ARGS)

# A guided tour: a sample shop copied between two throw-away servers while it takes orders,
# then verified row by row (demo/__init__.py). Options: make demo DEMO_ARGS="--duration 5"
demo: install servers
	$(BIN)/python -m demo $(DEMO_ARGS)

# Do the fault tests catch a broken engine? Runs tests/faults/test_failpoints.py against a copy
# of the working tree with tests/faults/broken-ack-before-commit.patch applied (acknowledge
# before commit); succeeds only if those tests fail.
.PHONY: faults-selftest
faults-selftest: install servers
	@scripts/faults-selftest.sh

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache bench/.chameleon-venv
