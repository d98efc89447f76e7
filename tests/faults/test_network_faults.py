"""The engine, run through its CLI, behind TCP proxies that cut and stall its connections to
the source and to the target under load; the target ends equal to the source row by row.

A stall (tests.tcpproxy: the sockets stay open, nothing is forwarded) is what a dead network
path looks like to both ends. On the source side the engine detects it
(``source.stall_timeout_s``). On the target side nothing does: libpq has no read timeout and
the proxy's kernel acknowledges every byte, so the engine waits for as long as the stall lasts
and carries on exactly when it ends, or when the connection finally breaks.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.faults.test_server_restarts import (
    FAST_RETRY,
    JSON_LOGS,
    PATTERNS,
    RECOVERED,
    RETRYING,
    STREAMING,
    fired_text,
    prepared_workload,
    spawn_engine,
)
from tests.pgcluster import PgCluster
from tests.support import (
    assert_same_rows,
    checkpoint_lsn,
    pipeline_dict,
    table_rows,
    wait_caught_up,
    wait_for,
    write_config,
)
from tests.tcpproxy import TcpProxy
from tests.workload import TABLES


def via(proxy: TcpProxy, cluster: PgCluster, dsn: str) -> str:
    """``dsn`` pointed at the proxy in front of ``cluster``."""
    return dsn.replace(f":{cluster.port}/", f":{proxy.port}/")


@pytest.mark.slow
def test_connections_cut_again_and_again_on_either_side_are_ridden_out(
    source_cluster: PgCluster,
    target_cluster: PgCluster,
    source_dsn: str,
    target_dsn: str,
    tmp_path: Path,
) -> None:
    """Every connection to the source, then every one to the target, cut three times each
    while a workload runs: the engine restarts the pipeline from its checkpoint after each
    cut, and the target ends exact (the keyless table without a duplicate)."""
    workload = prepared_workload(source_dsn)
    with (
        TcpProxy("127.0.0.1", source_cluster.port) as to_source,
        TcpProxy("127.0.0.1", target_cluster.port) as to_target,
    ):
        config = write_config(
            tmp_path / "replicator.yaml",
            pipeline_dict(
                "cuts",
                via(to_source, source_cluster, source_dsn),
                via(to_target, target_cluster, target_dsn),
                PATTERNS,
                batch={"max_events": 200},
                retry=FAST_RETRY,
            ),
            logging=JSON_LOGS,
        )
        with spawn_engine(config, tmp_path / "replicator.log") as engine:
            engine.wait_logged(STREAMING)
            workload.start()
            try:
                for runs, proxy in enumerate([to_source, to_target] * 3, start=1):
                    # Each cut lands while the pipeline streams, all its connections open.
                    engine.wait_logged(STREAMING, runs)
                    time.sleep(1)
                    assert proxy.cut() > 0
                engine.wait_logged(STREAMING, 7)
                time.sleep(1)
            finally:
                workload.stop()
            wait_caught_up(source_dsn, target_dsn, "cuts")
            engine.stop()
    assert len(engine.entries(RETRYING)) >= 6, engine.entries(RETRYING)
    assert len(engine.entries(RECOVERED)) >= 6
    assert workload.transactions > 150 and workload.rollbacks > 0
    assert_same_rows(source_dsn, target_dsn, *TABLES)


@pytest.mark.slow
def test_a_replication_connection_stalled_for_good_is_given_up_and_streaming_resumes(
    source_cluster: PgCluster,
    source_dsn: str,
    target_dsn: str,
    tmp_path: Path,
) -> None:
    """Every connection to the source goes silent under load (a dead path, no reset) and
    stays so: with source.stall_timeout_s at 3 the engine gives the replication connection
    up, reconnects through a new path, retries while the old walsender still holds the slot
    (until its wal_sender_timeout, longer than a start waits for a busy slot), and then
    streams the rows written meanwhile exactly."""
    workload = prepared_workload(source_dsn)
    with TcpProxy("127.0.0.1", source_cluster.port) as to_source:
        # Status updates every second: the old walsender lets the slot go 25 s after the stall.
        dsn = via(to_source, source_cluster, source_dsn) + "?options=-c%20wal_sender_timeout%3D25s"
        config = write_config(
            tmp_path / "replicator.yaml",
            pipeline_dict(
                "stall",
                dsn,
                target_dsn,
                PATTERNS,
                source={"stall_timeout_s": 3, "status_interval_s": 1},
                retry=FAST_RETRY,
            ),
            logging=JSON_LOGS,
        )
        with spawn_engine(config, tmp_path / "replicator.log") as engine:
            engine.wait_logged(STREAMING)
            workload.start()
            try:
                time.sleep(1)
                stalled_at = time.monotonic()
                assert to_source.stall() > 0
                time.sleep(2)
            finally:
                workload.stop()
            first, *_ = engine.wait_logged(RETRYING, timeout=30)
            assert "the replication connection is stalled" in first["error"], first
            engine.wait_logged(STREAMING, 2, timeout=60)
            assert time.monotonic() - stalled_at > 20  # it did outwait the old walsender
            wait_caught_up(source_dsn, target_dsn, "stall")
            engine.stop()
        assert to_source.stalled_connections > 0  # the dead path never came back
    waits = [e for e in engine.entries(RETRYING) if "still held" in e["error"]]
    assert waits, engine.entries(RETRYING)
    assert engine.entries(RECOVERED)
    assert_same_rows(source_dsn, target_dsn, *TABLES)


def test_a_stalled_target_connection_holds_the_engine_until_the_path_recovers(
    target_cluster: PgCluster,
    source_dsn: str,
    target_dsn: str,
    tmp_path: Path,
) -> None:
    """Every connection to the target goes silent for 4 s under load: nothing commits
    meanwhile and the engine neither fails nor reconnects (no timeout notices a silent
    target); when the path recovers the held round trips complete and the target ends
    exact."""
    workload = prepared_workload(source_dsn)
    with TcpProxy("127.0.0.1", target_cluster.port) as to_target:
        config = write_config(
            tmp_path / "replicator.yaml",
            pipeline_dict(
                "tstall",
                source_dsn,
                via(to_target, target_cluster, target_dsn),
                PATTERNS,
                retry=FAST_RETRY,
            ),
            logging=JSON_LOGS,
        )
        with spawn_engine(config, tmp_path / "replicator.log") as engine:
            engine.wait_logged(STREAMING)
            workload.start()
            try:
                time.sleep(1)
                assert to_target.stall() > 0
                time.sleep(0.5)  # a COMMIT that got through just before is done by now
                held = checkpoint_lsn(target_dsn, "tstall")
                time.sleep(4)
                assert checkpoint_lsn(target_dsn, "tstall") == held
                engine.assert_running()
                assert to_target.unstall() > 0
                wait_for(lambda: checkpoint_lsn(target_dsn, "tstall") > held, 30, "a commit")
                time.sleep(1)
            finally:
                workload.stop()
            wait_caught_up(source_dsn, target_dsn, "tstall")
            engine.stop()
    assert not engine.entries(RETRYING)
    assert_same_rows(source_dsn, target_dsn, *TABLES)


def test_a_commit_whose_reply_is_lost_is_not_applied_twice(
    target_cluster: PgCluster,
    source_dsn: str,
    target_dsn: str,
    tmp_path: Path,
) -> None:
    """The target commits a batch but its reply never reaches the engine (replies stalled
    while failpoint sink.before_commit holds the COMMIT back, then the connection cut):
    the engine sees the commit fail, restarts from the checkpoint, finds the batch
    committed with it, and nothing is applied twice (the keyless table is exact)."""
    workload = prepared_workload(source_dsn)
    fired = tmp_path / "failpoints.log"
    env = {
        "REPLICATOR_FAILPOINTS": "sink.before_commit=sleep:2@20",
        "REPLICATOR_FAILPOINTS_LOG": str(fired),
    }
    with TcpProxy("127.0.0.1", target_cluster.port) as to_target:
        config = write_config(
            tmp_path / "replicator.yaml",
            pipeline_dict(
                "lostreply",
                source_dsn,
                via(to_target, target_cluster, target_dsn),
                PATTERNS,
                retry=FAST_RETRY,
            ),
            logging=JSON_LOGS,
        )
        with spawn_engine(config, tmp_path / "replicator.log", env) as engine:
            engine.wait_logged(STREAMING)
            workload.start()
            try:
                wait_for(lambda: fired_text(fired).endswith("\n"), 60, "the failpoint to fire")
                assert fired_text(fired) == "sink.before_commit sleep 20\n"
                assert to_target.stall(to_server=False) > 0
                before = checkpoint_lsn(target_dsn, "lostreply")
                rows_before = [table_rows(target_dsn, table) for table in TABLES]
                # The COMMIT goes through after the sleep; only its answer is held.
                wait_for(
                    lambda: checkpoint_lsn(target_dsn, "lostreply") > before,
                    30,
                    "the held-back batch to commit",
                )
                # It carried changes, now committed: replaying them would show.
                assert [table_rows(target_dsn, table) for table in TABLES] != rows_before
                assert to_target.cut() > 0
                first, *_ = engine.wait_logged(RETRYING)
                assert "committing" in first["error"], first
                engine.wait_logged(STREAMING, 2)
                time.sleep(1)
            finally:
                workload.stop()
            wait_caught_up(source_dsn, target_dsn, "lostreply")
            engine.stop()
    assert engine.entries(RECOVERED)
    assert_same_rows(source_dsn, target_dsn, *TABLES)
