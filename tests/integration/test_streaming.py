"""Streaming PostgreSQL → PostgreSQL against real servers, one behaviour per test."""

from __future__ import annotations

import pytest

from replicator.errors import SchemaMismatchError
from tests.support import (
    RunningPipeline,
    assert_same_rows,
    connect,
    execute,
    pipeline_config,
    table_rows,
    wait_caught_up,
    wait_streaming,
)


@pytest.fixture
def start(source_dsn: str, target_dsn: str):
    """Start a pipeline over the test databases; stopped (and checked) at teardown."""
    running: list[RunningPipeline] = []

    def starter(tables: list[str] | None = None, name: str = "it", **extra: object):
        pipeline = RunningPipeline(pipeline_config(name, source_dsn, target_dsn, tables, **extra))
        running.append(pipeline)
        # Changes made from now on are captured: the slot streams the publication.
        wait_streaming(pipeline, source_dsn)
        return pipeline

    yield starter
    for pipeline in running:
        if pipeline.thread.is_alive():
            pipeline.stop()


def test_inserts_updates_deletes_and_key_changes_reach_the_target(start, source_dsn, target_dsn):
    """Every kind of row change, including primary-key changes, is replicated exactly."""
    execute(source_dsn, "CREATE TABLE items (id int PRIMARY KEY, name text, qty int)")
    start()
    execute(
        source_dsn,
        "INSERT INTO items SELECT g, 'item ' || g, g FROM generate_series(1, 200) g",
        "UPDATE items SET qty = qty * 2 WHERE id % 3 = 0",
        "UPDATE items SET id = id + 1000 WHERE id % 7 = 0",
        "DELETE FROM items WHERE id % 5 = 0",
        "UPDATE items SET id = -id WHERE id BETWEEN 10 AND 20",
    )
    wait_caught_up(source_dsn, target_dsn, "it")
    assert_same_rows(source_dsn, target_dsn, "items")


def test_multi_table_transactions_and_rollbacks(start, source_dsn, target_dsn):
    """Committed multi-table transactions arrive whole; rolled-back ones never arrive."""
    execute(
        source_dsn,
        "CREATE TABLE a (id int PRIMARY KEY, v text)",
        "CREATE TABLE b (id int PRIMARY KEY, a_id int, v text)",
    )
    start()
    with connect(source_dsn) as conn:
        with conn.transaction():
            conn.execute("INSERT INTO a VALUES (1, 'one')")
            conn.execute("INSERT INTO b VALUES (1, 1, 'child')")
        try:
            with conn.transaction():
                conn.execute("INSERT INTO a VALUES (2, 'rolled back')")
                conn.execute("INSERT INTO b VALUES (2, 2, 'rolled back')")
                raise RuntimeError("abort")
        except RuntimeError:
            pass
        with conn.transaction():
            conn.execute("UPDATE a SET v = 'uno' WHERE id = 1")
            conn.execute("DELETE FROM b WHERE id = 1")
    wait_caught_up(source_dsn, target_dsn, "it")
    assert table_rows(target_dsn, "a") == ["(1,uno)"]
    assert table_rows(target_dsn, "b") == []


def test_truncate_empties_the_target_and_later_rows_arrive(start, source_dsn, target_dsn):
    """TRUNCATE (of several tables at once) clears the target; rows after it are kept."""
    execute(
        source_dsn,
        "CREATE TABLE t1 (id int PRIMARY KEY)",
        "CREATE TABLE t2 (id int PRIMARY KEY)",
    )
    start()
    with connect(source_dsn) as conn:
        with conn.transaction():
            conn.execute("INSERT INTO t1 SELECT generate_series(1, 50)")
            conn.execute("INSERT INTO t2 SELECT generate_series(1, 50)")
            conn.execute("TRUNCATE t1, t2")
            conn.execute("INSERT INTO t1 VALUES (7)")
        conn.execute("INSERT INTO t2 VALUES (8)")
    wait_caught_up(source_dsn, target_dsn, "it")
    assert table_rows(target_dsn, "t1") == ["(7)"]
    assert table_rows(target_dsn, "t2") == ["(8)"]


def test_unchanged_toast_values_are_never_overwritten(start, source_dsn, target_dsn):
    """Updating other columns of a row with a TOASTed value keeps that value in the target."""
    execute(
        source_dsn,
        "CREATE TABLE docs (id int PRIMARY KEY, body text, v int)",
        "ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL",
    )
    start()
    big = "x" * 100_000
    execute(source_dsn, f"INSERT INTO docs SELECT g, '{big}' || g, 0 FROM generate_series(1, 20) g")
    wait_caught_up(source_dsn, target_dsn, "it")
    # In later transactions: body is not sent, only v changes; one row also changes its key.
    execute(
        source_dsn,
        "UPDATE docs SET v = v + 1",
        "UPDATE docs SET id = id + 100, v = 5 WHERE id = 3",
        "UPDATE docs SET v = 9 WHERE id = 103",
    )
    wait_caught_up(source_dsn, target_dsn, "it")
    assert_same_rows(source_dsn, target_dsn, "docs")
    with connect(target_dsn) as conn:
        row = conn.execute("SELECT count(*) FROM docs WHERE length(body) > 100000").fetchone()
    assert row == (20,)


def test_keyless_table_updates_exactly_one_of_identical_rows(start, source_dsn, target_dsn):
    """With REPLICA IDENTITY FULL, an update or delete touches one duplicate, not all."""
    execute(
        source_dsn,
        "CREATE TABLE log (msg text, n int, doc json)",
        "ALTER TABLE log REPLICA IDENTITY FULL",
    )
    start()
    with connect(source_dsn) as conn:
        conn.execute(
            """INSERT INTO log VALUES ('a', 1, '{"k": 1}'), ('a', 1, '{"k": 1}'),"""
            """ ('a', 1, '{"k": 1}'), ('b', NULL, NULL)"""
        )
        conn.execute(
            "UPDATE log SET n = 2 WHERE ctid = (SELECT ctid FROM log WHERE msg = 'a' LIMIT 1)"
        )
        conn.execute("DELETE FROM log WHERE ctid = (SELECT ctid FROM log WHERE n = 1 LIMIT 1)")
        conn.execute("UPDATE log SET msg = 'c' WHERE n IS NULL")
    wait_caught_up(source_dsn, target_dsn, "it")
    assert_same_rows(source_dsn, target_dsn, "log")
    assert sorted(table_rows(target_dsn, "log")) == [
        '(a,1,"{""k"": 1}")',
        '(a,2,"{""k"": 1}")',
        "(c,,)",
    ]


def test_partitions_replicate_into_one_table_and_generated_columns_stay_generated(
    start, source_dsn, target_dsn
):
    """A partitioned table lands in one target table; generated columns are recomputed."""
    execute(
        source_dsn,
        "CREATE TABLE m (id int, day date, v numeric(10,2),"
        " doubled numeric GENERATED ALWAYS AS (v * 2) STORED, PRIMARY KEY (id, day))"
        " PARTITION BY RANGE (day)",
        "CREATE TABLE m_2024 PARTITION OF m FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')",
        "CREATE TABLE m_2025 PARTITION OF m FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')",
    )
    start()
    execute(
        source_dsn,
        "INSERT INTO m (id, day, v) VALUES (1, '2024-05-01', 1.5), (2, '2025-05-01', 2.25)",
        "UPDATE m SET v = 10 WHERE id = 2",
        # Moves the row across partitions: pgoutput sends it as delete + insert.
        "UPDATE m SET day = '2025-02-02' WHERE id = 1",
    )
    wait_caught_up(source_dsn, target_dsn, "it")
    assert_same_rows(source_dsn, target_dsn, "m")
    with connect(target_dsn) as conn:
        kinds = conn.execute(
            "SELECT c.relkind, a.attgenerated FROM pg_class c JOIN pg_attribute a"
            " ON a.attrelid = c.oid WHERE c.relname = 'm' AND a.attname = 'doubled'"
        ).fetchone()
        partitions = conn.execute(
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'm\\_2%'"
        ).fetchone()
    assert kinds == ("r", "s")
    assert partitions == (0,)


def test_column_added_mid_stream_stops_with_the_fix(start, source_dsn, target_dsn):
    """A new source column stops the pipeline with the ALTER TABLE to run; data stays aligned."""
    execute(source_dsn, "CREATE TABLE s (id int PRIMARY KEY, a text)")
    pipeline = start()
    execute(source_dsn, "INSERT INTO s VALUES (1, 'before')")
    wait_caught_up(source_dsn, target_dsn, "it")
    execute(
        source_dsn,
        "ALTER TABLE s ADD COLUMN b integer",
        "INSERT INTO s VALUES (2, 'after', 42)",
    )
    error = pipeline.wait_failed()
    assert isinstance(error, SchemaMismatchError)
    assert "column b (integer) exists in the source but not in the target" in str(error)
    assert "ALTER TABLE public.s ADD COLUMN b integer;" in str(error)
    assert table_rows(target_dsn, "s") == ["(1,before)"]
    # After the fix, a restart resumes exactly where it stopped.
    execute(target_dsn, "ALTER TABLE public.s ADD COLUMN b integer")
    start(name="it")
    wait_caught_up(source_dsn, target_dsn, "it")
    assert_same_rows(source_dsn, target_dsn, "s")


def test_composite_keys_and_schemas_are_kept(start, source_dsn, target_dsn):
    """Tables in several schemas with composite keys are created and kept in step."""
    execute(
        source_dsn,
        "CREATE SCHEMA sales",
        'CREATE TABLE sales."Order Lines" (order_id int, line int, sku text,'
        " PRIMARY KEY (order_id, line))",
        "CREATE TABLE public.skip_me (id int PRIMARY KEY)",
    )
    start(tables=["sales.*"])
    execute(
        source_dsn,
        "INSERT INTO sales.\"Order Lines\" SELECT o, l, 'sku' || l"
        " FROM generate_series(1, 20) o, generate_series(1, 3) l",
        'UPDATE sales."Order Lines" SET line = line + 10 WHERE order_id = 4',
        'DELETE FROM sales."Order Lines" WHERE line = 2',
        "INSERT INTO public.skip_me VALUES (1)",
    )
    wait_caught_up(source_dsn, target_dsn, "it")
    assert_same_rows(source_dsn, target_dsn, 'sales."Order Lines"')
    with connect(target_dsn) as conn:
        assert conn.execute("SELECT to_regclass('public.skip_me')").fetchone() == (None,)


def test_every_type_survives_the_stream_and_keeps_its_type(start, source_dsn, target_dsn):
    """All value edge cases travel through pgoutput and COPY unchanged, in identical types."""
    from tests.integration.test_value_roundtrip import CASES, USER_TYPES

    columns = ", ".join(f"c{i} {t}" for i, (t, _) in enumerate(CASES))
    execute(source_dsn, *USER_TYPES, f"CREATE TABLE every (id int PRIMARY KEY, {columns})")
    start()
    values = ", ".join(
        "NULL" if v is None else f"'{v.replace(chr(39), chr(39) * 2)}'::{t}" for t, v in CASES
    )
    execute(
        source_dsn,
        f"INSERT INTO every VALUES (1, {values})",
        "INSERT INTO every (id) VALUES (2)",
        f"INSERT INTO every VALUES (3, {values})",
        "UPDATE every SET id = 4 WHERE id = 3",
    )
    wait_caught_up(source_dsn, target_dsn, "it")
    assert_same_rows(source_dsn, target_dsn, "every")
    type_query = (
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = 'every'::regclass AND attnum > 0 ORDER BY attnum"
    )
    with connect(source_dsn) as src, connect(target_dsn) as dst:
        assert src.execute(type_query).fetchall() == dst.execute(type_query).fetchall()


@pytest.mark.parametrize(
    ("ddl", "message", "fix"),
    [
        (
            "ALTER TABLE s DROP COLUMN a",
            "column a exists in the target but no longer in the source",
            "ALTER TABLE public.s DROP COLUMN a;",
        ),
        (
            "ALTER TABLE s ALTER COLUMN a TYPE bigint USING length(a)",
            "column a is bigint in the source but text in the target",
            "ALTER TABLE public.s ALTER COLUMN a TYPE bigint;",
        ),
    ],
)
def test_dropped_or_retyped_column_stops_with_the_fix(
    start, source_dsn, target_dsn, ddl, message, fix
):
    """Dropping or retyping a column stops the pipeline and names the statement to run."""
    execute(source_dsn, "CREATE TABLE s (id int PRIMARY KEY, a text, b int)")
    pipeline = start()
    execute(source_dsn, "INSERT INTO s VALUES (1, 'x', 1)", ddl, "INSERT INTO s (id) VALUES (2)")
    error = pipeline.wait_failed()
    assert isinstance(error, SchemaMismatchError)
    assert message in str(error) and fix in str(error)
    assert table_rows(target_dsn, "s") == ["(1,x,1)"]  # the change before stays applied


def test_renamed_source_table_is_not_copied_twice(start, source_dsn, target_dsn):
    """A table renamed in the source stops the pipeline instead of starting a partial copy."""
    execute(source_dsn, "CREATE TABLE old_name (id int PRIMARY KEY)")
    pipeline = start()
    execute(source_dsn, "INSERT INTO old_name VALUES (1)")
    wait_caught_up(source_dsn, target_dsn, "it")
    execute(
        source_dsn, "ALTER TABLE old_name RENAME TO new_name", "INSERT INTO new_name VALUES (2)"
    )
    error = pipeline.wait_failed()
    assert isinstance(error, SchemaMismatchError)
    assert "ALTER TABLE public.old_name RENAME TO new_name;" in str(error)
    execute(target_dsn, "ALTER TABLE old_name RENAME TO new_name")
    start()
    wait_caught_up(source_dsn, target_dsn, "it")
    assert_same_rows(source_dsn, target_dsn, "new_name")


def test_recreated_source_table_is_copied_afresh(start, source_dsn, target_dsn):
    """A table dropped and re-created under the same name replaces the old copy."""
    execute(source_dsn, "CREATE TABLE r (id int PRIMARY KEY)")
    pipeline = start()
    execute(source_dsn, "INSERT INTO r VALUES (1)")
    wait_caught_up(source_dsn, target_dsn, "it")
    pipeline.stop()
    execute(source_dsn, "DROP TABLE r", "CREATE TABLE r (id int PRIMARY KEY)")
    execute(source_dsn, "INSERT INTO r VALUES (3)")
    pipeline = start()
    execute(source_dsn, "INSERT INTO r VALUES (2)")
    wait_caught_up(source_dsn, target_dsn, "it")
    assert table_rows(target_dsn, "r") == ["(2)", "(3)"]


def test_recreated_source_table_does_not_keep_old_rows(start, source_dsn, target_dsn):
    """Without a snapshot, a re-created table stops the pipeline rather than merging."""
    execute(source_dsn, "CREATE TABLE r (id int PRIMARY KEY)")
    pipeline = start(source={"snapshot": "never"})
    execute(source_dsn, "INSERT INTO r VALUES (1)")
    wait_caught_up(source_dsn, target_dsn, "it")
    pipeline.stop()
    execute(source_dsn, "DROP TABLE r", "CREATE TABLE r (id int PRIMARY KEY)")
    pipeline = start(source={"snapshot": "never"})
    execute(source_dsn, "INSERT INTO r VALUES (2)")
    error = pipeline.wait_failed()
    assert isinstance(error, SchemaMismatchError)
    assert "dropped and re-created" in str(error) and "DROP TABLE public.r;" in str(error)


def test_types_in_other_schemas_resolve_whatever_the_search_path(start, source_dsn, target_dsn):
    """Type names are schema-qualified on both ends, so a custom search_path changes nothing."""
    database = source_dsn.rsplit("/", 1)[1]
    execute(
        source_dsn,
        "CREATE SCHEMA sales",
        "CREATE TYPE sales.status AS ENUM ('new', 'paid')",
        "CREATE DOMAIN sales.cents AS bigint CHECK (VALUE >= 0)",
        f'ALTER DATABASE "{database}" SET search_path = sales, public',
    )
    execute(source_dsn, "CREATE TABLE public.orders (id int PRIMARY KEY, s status, c cents)")
    start()
    execute(source_dsn, "INSERT INTO public.orders VALUES (1, 'paid', 250)")
    wait_caught_up(source_dsn, target_dsn, "it")
    assert_same_rows(source_dsn, target_dsn, "public.orders")
    with connect(target_dsn) as conn:
        types = conn.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = 'public.orders'::regclass AND attnum > 1 ORDER BY attnum"
        ).fetchall()
    assert types == [("sales.status",), ("sales.cents",)]


def test_updates_of_rows_older_than_the_pipeline_still_land(start, source_dsn, target_dsn):
    """An update of a row the target never had inserts its new version, keyed or not."""
    execute(
        source_dsn,
        "CREATE TABLE keyed (id int PRIMARY KEY, n int, doc jsonb)",
        "CREATE TABLE keyless (n int, doc json, at timestamptz)",
        "ALTER TABLE keyless REPLICA IDENTITY FULL",
        """INSERT INTO keyed VALUES (1, 1, '{"a": 1}')""",
        """INSERT INTO keyless VALUES (1, '{"a": 1}', 'infinity')""",
    )
    start()
    execute(source_dsn, "UPDATE keyed SET n = 2", "UPDATE keyless SET n = 2")
    wait_caught_up(source_dsn, target_dsn, "it")
    assert table_rows(target_dsn, "keyed") == ['(1,2,"{""a"": 1}")']
    assert table_rows(target_dsn, "keyless") == ['(2,"{""a"": 1}",infinity)']


def test_keyword_and_mixed_case_names_are_quoted_everywhere(start, source_dsn, target_dsn):
    """Tables and columns named like SQL keywords, or in mixed case, replicate untouched."""
    execute(
        source_dsn,
        'CREATE SCHEMA "Select"',
        'CREATE TABLE "Select"."order" ("user" int PRIMARY KEY, "from" text, "Group" int)',
        'CREATE TABLE public."table" ("where" int, "NaMe" text)',
        'ALTER TABLE public."table" REPLICA IDENTITY FULL',
    )
    start(tables=["Select.*", "public.*"])
    execute(
        source_dsn,
        """INSERT INTO "Select"."order" VALUES (1, 'a', 1), (2, 'b', 2)""",
        """UPDATE "Select"."order" SET "user" = 3, "Group" = 9 WHERE "user" = 1""",
        """DELETE FROM "Select"."order" WHERE "user" = 2""",
        """INSERT INTO public."table" VALUES (1, 'x'), (1, 'x')""",
        """UPDATE public."table" SET "NaMe" = 'y'"""
        """ WHERE ctid = (SELECT min(ctid) FROM public."table")""",
    )
    wait_caught_up(source_dsn, target_dsn, "it")
    assert_same_rows(source_dsn, target_dsn, '"Select"."order"', 'public."table"')
