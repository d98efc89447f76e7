"""The command line as a new user meets it: errors, check, run, status, drop."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import psycopg

from tests.support import (
    checkpoint_lsn,
    execute,
    pipeline_dict,
    reap,
    run_cli,
    slot_lsn,
    snapshot_done,
    spawn_run,
    table_rows,
    wait_caught_up,
    wait_for,
    write_config,
)


def assert_clean_error(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    """Exit ``code``, an ``Error:`` line naming the problem, and no traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    # `run` may log before it fails; the error itself is the last thing it prints.
    assert result.stderr.startswith("Error: ") or "\nError: " in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)


def with_password(dsn: str, user: str, password: str) -> str:
    """``dsn`` rewritten to log in as ``user``."""
    rest = dsn.split("@", 1)[1]
    return f"postgresql://{user}:{password}@{rest}"


def test_bad_configs_exit_2_with_the_problem_named(tmp_path: Path):
    """Missing file, broken YAML and invalid values each exit 2 with a precise message."""
    assert_clean_error(run_cli("run", "-c", str(tmp_path / "missing.yaml")), 2, "does not exist")
    broken = tmp_path / "broken.yaml"
    broken.write_text("pipelines:\n  - name: [x\n")
    assert_clean_error(run_cli("check", "-c", str(broken)), 2, "not valid YAML")
    invalid = tmp_path / "invalid.yaml"
    invalid.write_text(
        "pipelines:\n  - name: p\n    source: {type: postgres, dsn: 'postgresql://u:s3cret@h/d',"
        " tables: [orders]}\n    sink: {type: postgres, dsn: 'postgresql://u@h/d', x: 1}\n"
    )
    result = run_cli("run", "-c", str(invalid))
    assert_clean_error(result, 2, "must be schema-qualified", "unknown key 'x'")
    assert "s3cret" not in result.stderr
    assert run_cli("run").returncode == 2  # usage error: -c is required


def test_check_lists_each_problem_with_its_fix(pg_cluster_factory, target_dsn, tmp_path: Path):
    """A misconfigured source gets one line per problem, each with the statement to run."""
    cluster = pg_cluster_factory("misconfigured", wal_level="replica")
    dsn = cluster.create_database("app")
    cluster.execute("CREATE ROLE app_reader LOGIN PASSWORD 'pw-0123456789'", dbname="app")
    cluster.execute("CREATE TABLE public.nokey (a int, b text)", dbname="app")
    cluster.execute("GRANT SELECT ON public.nokey TO app_reader", dbname="app")
    config = write_config(
        tmp_path / "c.yaml",
        pipeline_dict("shop", with_password(dsn, "app_reader", "pw-0123456789"), target_dsn),
    )
    result = run_cli("check", "-c", str(config))
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "ALTER SYSTEM SET wal_level = logical" in out
    assert "ALTER ROLE app_reader REPLICATION;" in out
    assert "ALTER TABLE public.nokey REPLICA IDENTITY FULL;" in out
    assert "only a table's owner can add it to a publication" in out
    assert "pw-0123456789" not in out + result.stderr
    # run refuses to start on the same problems.
    refused = run_cli("run", "-c", str(config))
    assert_clean_error(refused, 1, "cannot start", "wal_level")


def test_check_passes_and_warns_about_unbounded_wal(source_dsn, target_dsn, tmp_path: Path):
    """A ready source passes (exit 0), with a warning that max_slot_wal_keep_size is unlimited."""
    execute(source_dsn, "CREATE TABLE t (id int PRIMARY KEY)")
    config = write_config(tmp_path / "c.yaml", pipeline_dict("ok", source_dsn, target_dsn))
    result = run_cli("check", "-c", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING  max_slot_wal_keep_size is unlimited" in result.stdout


def test_same_database_as_source_and_sink_is_refused(source_dsn, tmp_path: Path):
    """Pointing the sink at the source database is caught before anything is written."""
    execute(source_dsn, "CREATE TABLE t (id int PRIMARY KEY)")
    config = write_config(tmp_path / "c.yaml", pipeline_dict("loop", source_dsn, source_dsn))
    result = run_cli("check", "-c", str(config))
    assert result.returncode == 1
    assert "the source and the sink are the same database" in result.stdout


def test_run_sigterm_status_and_drop(source_dsn, target_dsn, tmp_path: Path):
    """run streams, SIGTERM exits 0 with the slot at the checkpoint, status reports, drop cleans."""
    execute(
        source_dsn,
        "CREATE TABLE t (id int PRIMARY KEY, v text)",
        "INSERT INTO t VALUES (0, 'already here')",
    )
    config = write_config(tmp_path / "c.yaml", pipeline_dict("life", source_dsn, target_dsn))
    log = tmp_path / "run.log"
    engine = spawn_run(config, log)
    try:
        # The copy's row estimate is counted outside its snapshot: let it finish first.
        wait_for(lambda: snapshot_done(target_dsn, "life", 1), 30, "the snapshot")
        execute(source_dsn, "INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 100) g")
        wait_caught_up(source_dsn, target_dsn, "life")
        running = run_cli("status", "-c", str(config), "--json")
        report = json.loads(running.stdout)[0]
        assert report["phase"] == "streaming"
        assert report["rows_inserted"] == 100 and report["lag_seconds"] is not None
        assert report["snapshot"] == [
            {
                "table": "public.t",
                "state": "done",
                "rows_copied": 1,
                "rows_estimated": 1,
                "rows_per_second": report["snapshot"][0]["rows_per_second"],
                "eta_seconds": None,
            }
        ]
        engine.send_signal(signal.SIGTERM)
        assert engine.wait(30) == 0
    finally:
        reap(engine)
    text = log.read_text()
    assert "snapshot finished" in text and len(table_rows(target_dsn, "t")) == 101
    assert slot_lsn(source_dsn, "replicator_life") == checkpoint_lsn(target_dsn, "life")
    status = run_cli("status", "-c", str(config))
    assert status.returncode == 0
    assert "pipeline life: stopped" in status.stdout
    assert "rows inserted: 100" in status.stdout
    assert "lag bytes:" in status.stdout
    dropped = run_cli("drop", "-c", str(config), "--pipeline", "life")
    assert dropped.returncode == 0, dropped.stderr
    assert "removed replication slot replicator_life" in dropped.stdout
    assert "removed publication replicator_life" in dropped.stdout
    assert "removed checkpoint" in dropped.stdout
    assert slot_lsn(source_dsn, "replicator_life") == 0
    with psycopg.connect(source_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM pg_publication").fetchone() == (0,)


def test_wrong_password_is_reported_without_the_password(source_dsn, target_dsn, tmp_path):
    """A failed login names the problem, but never prints the password itself."""
    execute(source_dsn, "CREATE TABLE t (id int PRIMARY KEY)")
    bad_target = with_password(target_dsn, "postgres", "Wrong-Pa55word")
    config = write_config(tmp_path / "c.yaml", pipeline_dict("pw", source_dsn, bad_target))
    for command in ("run", "check", "status"):
        result = run_cli(command, "-c", str(config))
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        output = result.stdout + result.stderr
        assert "password authentication failed" in output, output
        assert "Wrong-Pa55word" not in output
        assert "Traceback" not in output
