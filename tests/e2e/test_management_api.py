"""The management API as an SRE uses it: `replicator run` with `api.listen`, under load.

Health and readiness, metrics that move as rows flow, pause and resume that lose and repeat
nothing, tokens on every mutating endpoint, reloads of a broken then a fixed file (over HTTP
and on SIGHUP), and no password in any response or log line.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest

from tests.apiclient import TOKEN, Instance, call, free_port, metric
from tests.otlp_receiver import OtlpReceiver
from tests.support import (
    assert_same_rows,
    checkpoint_lsn,
    connect,
    execute,
    pipeline_dict,
    run_cli,
    slot_lsn,
    wait_caught_up,
    wait_for,
    write_config,
)


@pytest.fixture
def started() -> Iterator[Callable[..., Instance]]:
    """Start instances that are killed after the test, whatever happened in it."""
    running: list[Instance] = []

    def start(*args: Any, **kwargs: Any) -> Instance:
        instance = Instance(*args, **kwargs)
        running.append(instance)
        return instance

    yield start
    for instance in running:
        instance.kill()


class Inserts:
    """Single-row insert transactions into ``public.items`` from a thread, until stopped."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with connect(self.dsn) as conn:
            while not self._stop.is_set():
                self.count += 1
                conn.execute(
                    "INSERT INTO items (id, note) VALUES (%s, %s)",
                    (self.count, f"row {self.count}"),
                )
                time.sleep(0.002)

    def stop(self) -> None:
        """Stop inserting and wait for the last insert."""
        self._stop.set()
        self._thread.join(30)


def _password(dsn: str) -> str:
    password = urlsplit(dsn).password
    assert password, "the test servers use password authentication"
    return password


def _target_count(dsn: str) -> int:
    with connect(dsn) as conn:
        try:
            row = conn.execute("SELECT count(*) FROM items").fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
    assert row is not None
    return int(row[0])


def _config(path: Path, port: int, *pipelines: dict[str, Any]) -> Path:
    return write_config(
        path,
        *pipelines,
        api={"listen": f"127.0.0.1:{port}", "token_env": "REPLICATOR_API_TOKEN"},
        logging={"level": "debug", "format": "json"},
    )


def test_operate_a_pipeline_under_load(source_dsn, target_dsn, tmp_path, started):
    """Read health, metrics and status while rows flow; pause (nothing applied, slot held),
    resume (nothing lost or repeated); refuse every mutating call without the right token."""
    execute(source_dsn, "CREATE TABLE items (id int PRIMARY KEY, note text)")
    port = free_port()
    config = _config(
        tmp_path / "replicator.yaml", port, pipeline_dict("ops", source_dsn, target_dsn)
    )
    log = tmp_path / "run.log"
    instance = started(config, port, log)
    inserts = Inserts(source_dsn)
    try:
        instance.wait_state("ops", "streaming")
        ready = instance.get("/health/ready").json()
        assert ready == {
            "ready": True,
            "pipelines": {
                "ops": {"ready": True, "state": "streaming", "reason": None, "warning": None}
            },
        }
        wait_for(lambda: instance.pipeline("ops")["counters"]["inserted"] > 50, 60, "rows")

        # Metrics move as rows flow.
        first = instance.get("/metrics")
        assert first.status == 200
        assert first.headers["Content-Type"].startswith("text/plain")
        text = first.body.decode()
        labels = {"pipeline": "ops", "table": "public.items", "op": "insert"}
        rows_before = metric(text, "replicator_rows_applied_total", **labels)
        assert rows_before is not None and rows_before > 0
        assert metric(text, "replicator_pipeline_state", pipeline="ops", state="streaming") == 1
        assert metric(text, "replicator_pipeline_state", pipeline="ops", state="paused") == 0
        assert metric(text, "replicator_batch_apply_seconds_count", pipeline="ops")
        wait_for(
            lambda: (
                metric(
                    instance.get("/metrics").body.decode(),
                    "replicator_source_lag_bytes",
                    pipeline="ops",
                )
                is not None
            ),
            30,
            "the poller to measure the slot",
        )
        wait_for(
            lambda: (
                (
                    metric(
                        instance.get("/metrics").body.decode(),
                        "replicator_rows_applied_total",
                        **labels,
                    )
                    or 0
                )
                > rows_before
            ),
            30,
            "the rows counter to move",
        )
        view = instance.pipeline("ops")
        assert view["state"] == "streaming" and view["events_per_second"] > 0
        assert view["lag_seconds"] is not None and view["position"]

        # Mutating endpoints refuse a missing or wrong token, and change nothing.
        for token in (None, "wrong-token-wrong-token", TOKEN + "x"):
            for path in ("/pipelines/ops/pause", "/config/reload", "/pipelines/ops/restart"):
                reply = instance.post(path, token=token)
                assert reply.status == 401, (path, token, reply.body)
                assert reply.headers["WWW-Authenticate"].startswith("Bearer")
                assert "Authorization: Bearer" in reply.json()["fix"]
        assert instance.pipeline("ops")["state"] == "streaming"

        # Pause: nothing more is applied or acknowledged, while the source keeps writing.
        reply = instance.post("/pipelines/ops/pause")
        assert reply.status == 200 and reply.json()["pause_requested"] is True
        instance.wait_state("ops", "paused", 30)
        applied = _target_count(target_dsn)
        checkpoint = checkpoint_lsn(target_dsn, "ops")
        # The last commit's acknowledgement reaches the server within a status interval.
        wait_for(lambda: slot_lsn(source_dsn, "replicator_ops") == checkpoint, 15, "the ack")
        written = inserts.count
        time.sleep(3)
        assert inserts.count > written + 100, "the workload kept writing during the pause"
        assert _target_count(target_dsn) == applied
        assert checkpoint_lsn(target_dsn, "ops") == checkpoint
        assert slot_lsn(source_dsn, "replicator_ops") == checkpoint
        paused = instance.pipeline("ops")
        assert paused["state"] == "paused" and paused["paused_at"]
        assert instance.get("/health/ready").status == 200  # paused is connected, not failed
        text = instance.get("/metrics").body.decode()
        assert metric(text, "replicator_pipeline_state", pipeline="ops", state="paused") == 1

        # Resume: everything written meanwhile arrives, exactly once.
        assert instance.post("/pipelines/ops/resume").status == 200
        instance.wait_state("ops", "streaming", 30)
        wait_for(lambda: _target_count(target_dsn) > applied, 30, "rows after the resume")
    finally:
        inserts.stop()
    wait_caught_up(source_dsn, target_dsn, "ops")
    assert_same_rows(source_dsn, target_dsn, "public.items")

    # Unknown pipelines and endpoints answer with what to do.
    missing = instance.get("/pipelines/nope")
    assert missing.status == 404 and "ops" in missing.json()["error"]
    assert instance.get("/nowhere").status == 404

    # No password in any response, nor in the log.
    everything = b"".join(
        instance.get(path).body
        for path in ("/pipelines", "/pipelines/ops", "/health/ready", "/metrics", "/openapi.json")
    )
    assert instance.stop() == 0
    logged = log.read_bytes()
    for password in (_password(source_dsn), _password(target_dsn)):
        assert password.encode() not in everything
        assert password.encode() not in logged
    assert TOKEN.encode() not in logged
    assert b'"event": "paused"' in logged and b'"event": "resumed"' in logged


def test_pause_outlasts_wal_sender_timeout(pg_cluster_factory, target_dsn, tmp_path, started):
    """A pause three times longer than wal_sender_timeout, with enough changes to fill the
    reader's queue, keeps the same replication connection, and resumes exactly."""
    cluster = pg_cluster_factory("short_sender_timeout", wal_sender_timeout="2s")
    source_dsn = cluster.create_database("paused")
    execute(source_dsn, "CREATE TABLE items (id int PRIMARY KEY, note text)")
    port = free_port()
    pipeline = pipeline_dict("hold", source_dsn, target_dsn, source={"status_interval_s": 0.5})
    config = _config(tmp_path / "replicator.yaml", port, pipeline)
    instance = started(config, port, tmp_path / "run.log")
    instance.wait_state("hold", "streaming")
    execute(source_dsn, "INSERT INTO items SELECT g, 'before' FROM generate_series(1, 100) g")
    wait_caught_up(source_dsn, target_dsn, "hold")
    sender = _walsender_pid(source_dsn)
    assert instance.post("/pipelines/hold/pause").status == 200
    instance.wait_state("hold", "paused", 30)
    # Far more changes than the reader's queue holds (64 hand-overs of 512).
    execute(
        source_dsn,
        *[
            f"INSERT INTO items SELECT g, 'paused' FROM generate_series({lo}, {lo + 9999}) g"
            for lo in range(1000, 101000, 10000)
        ],
        *[f"UPDATE items SET note = 'updated {i}' WHERE id % 7 = {i}" for i in range(7)],
    )
    time.sleep(7)  # more than three wal_sender_timeouts
    assert _walsender_pid(source_dsn) == sender, "the replication connection was dropped"
    assert instance.pipeline("hold")["state"] == "paused"
    assert _target_count(target_dsn) == 100
    assert instance.post("/pipelines/hold/resume").status == 200
    wait_caught_up(source_dsn, target_dsn, "hold", timeout=120)
    assert_same_rows(source_dsn, target_dsn, "public.items")
    assert _walsender_pid(source_dsn) == sender
    assert instance.stop() == 0


def _walsender_pid(dsn: str) -> int:
    with connect(dsn) as conn:
        row = conn.execute(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'replicator_hold'"
        ).fetchone()
    assert row is not None and row[0] is not None, "no walsender streams from the slot"
    return int(row[0])


def test_reload_broken_then_fixed(source_cluster, target_cluster, target_dsn, tmp_path, started):
    """An invalid file is refused with its problems (over HTTP and SIGHUP) and the running
    pipeline goes on; a valid one adds, restarts and removes pipelines."""
    first_db = source_cluster.create_database("reload_a")
    second_db = source_cluster.create_database("reload_b")
    second_target = target_cluster.create_database("reload_b_target")
    try:
        for dsn in (first_db, second_db):
            execute(dsn, "CREATE TABLE items (id int PRIMARY KEY, note text)")
        port = free_port()
        path = tmp_path / "replicator.yaml"
        one = pipeline_dict("alpha", first_db, target_dsn, tables=["public.items"])
        _config(path, port, one)
        log = tmp_path / "run.log"
        instance = started(path, port, log)
        instance.wait_state("alpha", "streaming")
        execute(first_db, "INSERT INTO items VALUES (1, 'one')")
        wait_caught_up(first_db, target_dsn, "alpha")
        good = path.read_text()

        # Broken: the errors come back, nothing changes.
        path.write_text(good.replace("type: postgres", "type: postgress", 1) + "bogus: 1\n")
        reply = instance.post("/config/reload")
        assert reply.status == 400
        body = reply.json()
        assert "running one stays" in body["error"]
        assert any("bogus" in p for p in body["problems"]), body
        assert any("type" in p for p in body["problems"]), body
        assert instance.pipeline("alpha")["state"] == "streaming"
        instance.process.send_signal(signal.SIGHUP)
        wait_for(lambda: b"configuration not reloaded" in log.read_bytes(), 20, "SIGHUP reload")
        assert instance.pipeline("alpha")["state"] == "streaming"
        text = instance.get("/metrics").body.decode()
        assert (metric(text, "replicator_config_reloads_total", result="rejected") or 0) >= 2

        # Fixed: a second pipeline is added and the first one, changed, restarts.
        changed = dict(one, batch={"max_events": 500})
        two = pipeline_dict("beta", second_db, second_target, tables=["public.items"])
        _config(path, port, changed, two)
        reply = instance.post("/config/reload")
        assert reply.status == 200, reply.body
        assert reply.json()["added"] == ["beta"] and reply.json()["restarted"] == ["alpha"]
        instance.wait_state("alpha", "streaming")
        instance.wait_state("beta", "streaming")
        execute(first_db, "INSERT INTO items VALUES (2, 'two')")
        execute(second_db, "INSERT INTO items VALUES (10, 'ten')")
        wait_caught_up(first_db, target_dsn, "alpha")
        wait_caught_up(second_db, second_target, "beta")
        assert_same_rows(first_db, target_dsn, "public.items")
        assert_same_rows(second_db, second_target, "public.items")

        # SIGHUP with beta removed: it stops cleanly, alpha is unchanged.
        _config(path, port, changed)
        instance.process.send_signal(signal.SIGHUP)
        wait_for(
            lambda: (
                [p["name"] for p in instance.get("/pipelines").json()["pipelines"]] == ["alpha"]
            ),
            60,
            "beta to be removed",
        )
        assert instance.pipeline("alpha")["state"] == "streaming"
        assert "beta" not in instance.get("/metrics").body.decode()
        assert instance.stop() == 0
    finally:
        for name in ("reload_a", "reload_b"):
            source_cluster.drop_database(name)
        target_cluster.drop_database("reload_b_target")


@pytest.mark.parametrize("setting", ["token_env", "token_file"])
def test_token_from_env_or_file(source_dsn, target_dsn, tmp_path, setting, started):
    """The token comes from the named variable or file; CLI pause/resume/status/reload go
    through the API with it."""
    execute(source_dsn, "CREATE TABLE items (id int PRIMARY KEY, note text)")
    port = free_port()
    api: dict[str, Any] = {"listen": f"127.0.0.1:{port}"}
    if setting == "token_env":
        api["token_env"] = "REPLICATOR_API_TOKEN"
    else:
        (tmp_path / "token").write_text(TOKEN + "\n")
        api["token_file"] = "token"
    config = write_config(
        tmp_path / "replicator.yaml", pipeline_dict("cli", source_dsn, target_dsn), api=api
    )
    instance = started(config, port, tmp_path / "run.log")
    instance.wait_state("cli", "streaming")
    env = {"REPLICATOR_API_TOKEN": TOKEN}
    paused = run_cli("pause", "-c", str(config), "-p", "cli", env=env)
    assert paused.returncode == 0, paused.stderr
    assert "pause" in paused.stdout
    instance.wait_state("cli", "paused")
    status = run_cli("status", "-c", str(config), env=env)
    assert status.returncode == 0, status.stderr
    assert "pipeline cli: paused" in status.stdout
    assert f"127.0.0.1:{port}" in status.stdout
    as_json = run_cli("status", "-c", str(config), "--json", env=env)
    assert json.loads(as_json.stdout)[0]["phase"] == "paused"
    resumed = run_cli("resume", "-c", str(config), "-p", "cli", env=env)
    assert resumed.returncode == 0, resumed.stderr
    instance.wait_state("cli", "streaming")
    reloaded = run_cli("reload", "-c", str(config), env=env)
    assert reloaded.returncode == 0, reloaded.stderr
    assert "unchanged: cli" in reloaded.stdout
    # A wrong token is refused with the fix, exit 1; nothing changed.
    if setting == "token_env":
        wrong = run_cli(
            "pause", "-c", str(config), "-p", "cli", env={"REPLICATOR_API_TOKEN": "x" * 20}
        )
        assert wrong.returncode == 1
        assert "wrong API token" in wrong.stderr
        assert instance.pipeline("cli")["state"] == "streaming"
    assert call(instance.base + "/pipelines/cli/pause", "POST").status == 401
    assert instance.stop() == 0


def test_batches_are_traced_over_otlp(source_dsn, target_dsn, tmp_path, started):
    """With observability.otlp_endpoint set, a committed batch is one trace (read, apply,
    checkpoint, acknowledge under batch), and the log lines written during it carry its id."""
    execute(source_dsn, "CREATE TABLE items (id int PRIMARY KEY, note text)")
    with OtlpReceiver() as collector:
        port = free_port()
        config = write_config(
            tmp_path / "replicator.yaml",
            pipeline_dict("traced", source_dsn, target_dsn),
            api={"listen": f"127.0.0.1:{port}"},
            logging={"level": "debug", "format": "json"},
            observability={"otlp_endpoint": collector.endpoint, "service_name": "repl-test"},
        )
        log = tmp_path / "run.log"
        instance = started(config, port, log)
        instance.wait_state("traced", "streaming")
        execute(source_dsn, "INSERT INTO items SELECT g, 'x' FROM generate_series(1, 50) g")
        wait_caught_up(source_dsn, target_dsn, "traced")

        def has_data_batch(spans: list[Any]) -> bool:
            return any(
                s.name == "batch" and s.attributes.get("replicator.events") == 50 for s in spans
            )

        spans = collector.wait_for(has_data_batch, timeout=30)
        assert instance.stop() == 0
    root = next(
        s for s in spans if s.name == "batch" and s.attributes.get("replicator.events") == 50
    )
    assert root.attributes["replicator.pipeline"] == "traced"
    assert root.resource["service.name"] == "repl-test"
    children = {s.name: s for s in spans if s.parent_span_id == root.span_id}
    assert set(children) == {"read", "apply", "checkpoint", "acknowledge"}
    assert all(c.trace_id == root.trace_id for c in children.values())
    assert children["read"].end_ns <= children["apply"].start_ns
    assert children["apply"].end_ns <= children["checkpoint"].start_ns
    assert children["checkpoint"].end_ns <= children["acknowledge"].start_ns
    traced_lines = [
        json.loads(line) for line in log.read_text().splitlines() if root.trace_id in line
    ]
    assert traced_lines, "no log line carries the batch's trace id"
    assert all(line["pipeline"] == "traced" for line in traced_lines)
