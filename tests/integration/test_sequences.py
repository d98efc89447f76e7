"""Sequence synchronisation for cutover: which sequences, how far, and never backwards."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict

from replicator.sequences import Outcome, SequenceResult, SequenceState, SequenceSync
from tests.support import (
    RunningPipeline,
    connect,
    execute,
    pipeline_config,
    pipeline_dict,
    run_cli,
    wait_for,
    write_config,
)


def sync(source_dsn: str, target_dsn: str, tables: list[str]) -> dict[str, SequenceResult]:
    """Run one synchronisation; results by source sequence name."""
    syncer = SequenceSync(pipeline_config("seq", source_dsn, target_dsn, tables))
    try:
        return {str(r.sequence): r for r in syncer.run()}
    finally:
        syncer.close()


def one(dsn: str, query: str) -> Any:
    """The first column of the first row of ``query``."""
    with connect(dsn) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def state(dsn: str, sequence: str) -> SequenceState:
    """A sequence's ``last_value`` and ``is_called``."""
    with connect(dsn) as conn:
        row = conn.execute(f"SELECT last_value, is_called FROM {sequence}").fetchone()
    assert row is not None
    return SequenceState(row[0], row[1])


def definition(dsn: str, sequence: str) -> tuple[Any, ...]:
    """Type, start, increment, bounds, cache and cycle of a sequence."""
    with connect(dsn) as conn:
        row = conn.execute(
            "SELECT format_type(seqtypid, NULL), seqstart, seqincrement, seqmin, seqmax,"
            " seqcache, seqcycle FROM pg_sequence WHERE seqrelid = %s::regclass",
            (sequence,),
        ).fetchone()
    assert row is not None
    return tuple(row)


def test_serial_sequence_is_set_past_the_source(source_dsn, target_dsn):
    """A serial column's sequence moves the target's next id past the source's last one."""
    execute(
        source_dsn,
        "CREATE TABLE orders (id serial PRIMARY KEY, v text)",
        "INSERT INTO orders (v) SELECT 'o' FROM generate_series(1, 5)",
        "CREATE TABLE skipped (id serial PRIMARY KEY)",
        "INSERT INTO skipped DEFAULT VALUES",
    )
    execute(
        target_dsn,
        "CREATE TABLE orders (id serial PRIMARY KEY, v text)",
        "INSERT INTO orders (v) VALUES ('a'), ('b')",
    )
    results = sync(source_dsn, target_dsn, ["public.orders"])
    assert list(results) == ["public.orders_id_seq"]  # skipped's sequence is not captured
    result = results["public.orders_id_seq"]
    assert result.outcome is Outcome.SET
    assert result.source_value == SequenceState(5, True)
    assert result.target_before == SequenceState(2, True)
    assert result.target_after == SequenceState(5, True)
    assert result.summary() == "public.orders_id_seq: source 5, target 2 -> 5"
    assert one(target_dsn, "INSERT INTO orders (v) VALUES ('new') RETURNING id") == 6
    again = sync(source_dsn, target_dsn, ["public.orders"])["public.orders_id_seq"]
    assert again.outcome is Outcome.AHEAD  # the target has since handed out 6 itself


def test_identity_column_sets_the_target_tables_own_sequence(source_dsn, target_dsn):
    """An identity column's target sequence is found through its column, whatever its name."""
    execute(
        source_dsn,
        "CREATE TABLE items (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text)",
        "INSERT INTO items (v) SELECT 'i' FROM generate_series(1, 40)",
    )
    execute(
        target_dsn,
        # Takes the name the identity would get, so the target's is items_id_seq1.
        "CREATE SEQUENCE items_id_seq",
        "CREATE TABLE items (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text)",
    )
    assert one(target_dsn, "SELECT pg_get_serial_sequence('items', 'id')") == (
        "public.items_id_seq1"
    )
    result = sync(source_dsn, target_dsn, ["public.*"])["public.items_id_seq"]
    assert result.outcome is Outcome.SET
    assert str(result.target) == "public.items_id_seq1"
    assert result.target_after == SequenceState(40, True)
    assert one(target_dsn, "INSERT INTO items (v) VALUES ('new') RETURNING id") == 41
    assert state(target_dsn, "items_id_seq") == SequenceState(1, False)  # the decoy is untouched


def test_standalone_and_default_sequences_are_selected_and_created(source_dsn, target_dsn):
    """Standalone sequences matching a pattern and those a column default uses are created."""
    execute(
        source_dsn,
        "CREATE SCHEMA billing",
        "CREATE SCHEMA util",
        "CREATE SEQUENCE billing.invoice_no AS integer INCREMENT BY 5 MINVALUE 100"
        " MAXVALUE 1000000 START WITH 100 CACHE 10 CYCLE",
        "SELECT nextval('billing.invoice_no')",  # fetches 10 values into this session's cache
        "CREATE SEQUENCE util.shared_ids START WITH 500",
        "CREATE TABLE orders (id int PRIMARY KEY, ref bigint DEFAULT nextval('util.shared_ids'))",
        "INSERT INTO orders (id) VALUES (1), (2)",
        "CREATE SEQUENCE util.unrelated",
        # Matches billing.*_ids by name, but belongs to a table the pipeline does not capture.
        "CREATE TABLE billing.other (id int)",
        "CREATE SEQUENCE billing.other_ids OWNED BY billing.other.id",
    )
    results = sync(source_dsn, target_dsn, ["public.orders", "billing.*_no", "billing.*_ids"])
    assert sorted(results) == ["billing.invoice_no", "util.shared_ids"]
    invoice = results["billing.invoice_no"]
    assert invoice.outcome is Outcome.CREATED
    # Values held in a session's cache count as handed out: 100 .. 145.
    assert invoice.source_value == SequenceState(145, True)
    assert invoice.target_after == SequenceState(145, True)
    assert definition(target_dsn, "billing.invoice_no") == definition(
        source_dsn, "billing.invoice_no"
    )
    assert one(target_dsn, "SELECT nextval('billing.invoice_no')") == 150
    shared = results["util.shared_ids"]
    assert shared.outcome is Outcome.CREATED
    assert one(target_dsn, "SELECT nextval('util.shared_ids')") == 502


def test_negative_increment_moves_the_target_further_down(source_dsn, target_dsn):
    """A descending sequence is behind when it is higher, ahead when lower; never flipped."""
    execute(
        source_dsn,
        "CREATE SEQUENCE countdown INCREMENT BY -1",
        "CREATE SEQUENCE countdown_low INCREMENT BY -1",
        "SELECT nextval('countdown'), nextval('countdown'), nextval('countdown')",
        "SELECT setval('countdown_low', -3)",
        "CREATE SEQUENCE flipped INCREMENT BY -1",
    )
    execute(
        target_dsn,
        "CREATE SEQUENCE flipped",
        "CREATE SEQUENCE countdown INCREMENT BY -1",
        "SELECT nextval('countdown')",
        "CREATE SEQUENCE countdown_low INCREMENT BY -1",
        "SELECT setval('countdown_low', -50)",
    )
    results = sync(source_dsn, target_dsn, ["public.*"])
    assert results["public.countdown"].outcome is Outcome.SET
    assert results["public.countdown"].target_before == SequenceState(-1, True)
    assert one(target_dsn, "SELECT nextval('countdown')") == -4
    assert results["public.countdown_low"].outcome is Outcome.AHEAD
    assert one(target_dsn, "SELECT nextval('countdown_low')") == -51
    flipped = results["public.flipped"]  # counting the other way: no value is safe
    assert flipped.outcome is Outcome.FAILED
    assert flipped.fix == "on the target: ALTER SEQUENCE public.flipped INCREMENT BY -1;"
    assert state(target_dsn, "flipped") == SequenceState(1, False)


def test_target_ahead_is_never_moved_back(source_dsn, target_dsn):
    """A target sequence beyond the source's is left where it is, and reported as ahead."""
    execute(
        source_dsn,
        "CREATE TABLE orders (id serial PRIMARY KEY)",
        "INSERT INTO orders SELECT FROM generate_series(1, 5)",
        "CREATE SEQUENCE level",
        "SELECT setval('level', 7)",
    )
    execute(
        target_dsn,
        "CREATE TABLE orders (id serial PRIMARY KEY)",
        "SELECT setval('orders_id_seq', 1000)",
        "CREATE SEQUENCE level",
        "SELECT setval('level', 7)",
    )
    results = sync(source_dsn, target_dsn, ["public.*"])
    ahead = results["public.orders_id_seq"]
    assert ahead.outcome is Outcome.AHEAD
    assert ahead.target_after == SequenceState(1000, True)
    assert ahead.summary() == "public.orders_id_seq: source 5, target 1000 (already ahead)"
    assert state(target_dsn, "orders_id_seq") == SequenceState(1000, True)
    assert results["public.level"].outcome is Outcome.IN_SYNC


def test_missing_sequences_are_created_with_the_source_definition(source_dsn, target_dsn):
    """Sequences of tables the target lacks are created, schema included, at the source's value."""
    execute(
        source_dsn,
        "CREATE TABLE events (id bigserial PRIMARY KEY)",
        "INSERT INTO events SELECT FROM generate_series(1, 7)",
        "CREATE TABLE fresh (id smallserial PRIMARY KEY)",
        "CREATE SCHEMA sales",
        'CREATE TABLE sales."Orders" (id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY)',
        'INSERT INTO sales."Orders" DEFAULT VALUES',
    )
    # A target table without a default or identity (as Replicator creates them).
    execute(target_dsn, "CREATE TABLE events (id bigint PRIMARY KEY)")
    results = sync(source_dsn, target_dsn, ["public.*", "sales.*"])
    assert sorted(results) == [
        "public.events_id_seq",
        "public.fresh_id_seq",
        "sales.Orders_id_seq",
    ]
    assert all(r.outcome is Outcome.CREATED for r in results.values()), results
    assert results["public.fresh_id_seq"].summary() == (
        "public.fresh_id_seq: source unused (next 1), target missing -> unused (next 1) (created)"
    )
    for name in ("events_id_seq", "fresh_id_seq", 'sales."Orders_id_seq"'):
        assert definition(target_dsn, name) == definition(source_dsn, name)
    assert one(target_dsn, "SELECT nextval('events_id_seq')") == 8
    assert one(target_dsn, "SELECT nextval('fresh_id_seq')") == 1
    assert one(target_dsn, """SELECT nextval('sales."Orders_id_seq"')""") == 2


def test_cli_prints_one_line_per_sequence_and_exits_0(source_dsn, target_dsn, tmp_path: Path):
    """`replicator sync-sequences` reports each sequence, never prints the password, exits 0."""
    execute(
        source_dsn,
        "CREATE TABLE orders (id serial PRIMARY KEY)",
        "INSERT INTO orders SELECT FROM generate_series(1, 5)",
        "CREATE TABLE lines (id serial PRIMARY KEY)",
        "INSERT INTO lines SELECT FROM generate_series(1, 3)",
    )
    execute(
        target_dsn,
        "CREATE TABLE orders (id serial PRIMARY KEY)",
        "SELECT setval('orders_id_seq', 1000)",
    )
    config = write_config(tmp_path / "c.yaml", pipeline_dict("shop", source_dsn, target_dsn))
    result = run_cli("sync-sequences", "-c", str(config), "--pipeline", "shop")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "pipeline shop:",
        "  public.lines_id_seq: source 3, target missing -> 3 (created)",
        "  public.orders_id_seq: source 5, target 1000 (already ahead)",
    ]
    for dsn in (source_dsn, target_dsn):
        password = str(conninfo_to_dict(dsn)["password"])
        assert password and password not in result.stdout + result.stderr
    assert state(target_dsn, "lines_id_seq") == SequenceState(3, True)

    unknown = run_cli("sync-sequences", "-c", str(config), "--pipeline", "nope")
    assert unknown.returncode == 2
    assert unknown.stderr.startswith("Error: no pipeline named 'nope'"), unknown.stderr
    missing = run_cli("sync-sequences", "-c", str(tmp_path / "missing.yaml"))
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr and "Traceback" not in missing.stderr


def test_cli_names_the_grant_a_sequence_needs_and_exits_1(
    source_cluster, source_dsn, target_dsn, tmp_path: Path
):
    """A sequence the source role may not read fails with the GRANT to run; the rest is set."""
    role = f"seq_reader_{secrets.token_hex(4)}"
    password = f"pw-{secrets.token_hex(8)}"
    execute(
        source_dsn,
        f"CREATE ROLE {role} LOGIN PASSWORD '{password}'",
        "CREATE SEQUENCE open_seq",
        "SELECT setval('open_seq', 42)",
        "CREATE SEQUENCE locked_seq",
        f"GRANT SELECT ON SEQUENCE open_seq TO {role}",
    )
    try:
        params = conninfo_to_dict(source_dsn)
        reader_dsn = source_cluster.dsn(str(params["dbname"]), user=role, password=password)
        config = write_config(tmp_path / "c.yaml", pipeline_dict("p", reader_dsn, target_dsn))
        result = run_cli("sync-sequences", "-c", str(config))
        assert result.returncode == 1, result.stdout + result.stderr
        assert "public.locked_seq: FAILED" in result.stdout
        assert f"fix: on the source: GRANT SELECT ON SEQUENCE public.locked_seq TO {role};" in (
            result.stdout
        )
        assert "public.open_seq: source 42, target missing -> 42 (created)" in result.stdout
        assert result.stderr.startswith("Error: 1 sequence(s)"), result.stderr
        assert password not in result.stdout + result.stderr
    finally:
        execute(source_dsn, f"DROP OWNED BY {role}", f"DROP ROLE {role}")


def test_a_running_pipeline_keeps_sequences_in_step(source_dsn, target_dsn):
    """With sync_sequences_interval_s set, the running pipeline synchronises sequences."""
    execute(source_dsn, "CREATE TABLE s (id serial PRIMARY KEY, v text)")
    execute(source_dsn, "INSERT INTO s (v) SELECT 'x' FROM generate_series(1, 50)")
    pipeline = RunningPipeline(
        pipeline_config("seqs", source_dsn, target_dsn, sync_sequences_interval_s=0.5)
    )
    try:

        def synced() -> bool:
            with connect(target_dsn) as conn:
                row = conn.execute(
                    "SELECT last_value FROM pg_sequences WHERE sequencename = 's_id_seq'"
                ).fetchone()
            return row is not None and row[0] is not None and row[0] >= 50

        wait_for(synced, 30, "the target sequence to reach the source's")
        execute(source_dsn, "INSERT INTO s (v) SELECT 'y' FROM generate_series(1, 25)")

        def advanced() -> bool:
            with connect(target_dsn) as conn:
                row = conn.execute(
                    "SELECT last_value FROM pg_sequences WHERE sequencename = 's_id_seq'"
                ).fetchone()
            return row is not None and row[0] is not None and row[0] >= 75

        wait_for(advanced, 30, "the target sequence to follow the source")
    finally:
        pipeline.stop()
