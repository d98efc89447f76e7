"""A paused MariaDB pipeline outlasts the server's ``net_write_timeout`` while its reader's
queue and the socket buffers are full, and resumes exactly where it stopped."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator

import pytest
from structlog.testing import capture_logs

from tests.mariadb import MariaDbFactory, MariaDbServer, MysqlDatabase
from tests.mysql_compare import assert_same_tables
from tests.mysql_helpers import checkpoint, checkpoint_order, mysql_pipeline_config, source_order
from tests.support import RunningPipeline, in_process, snapshot_done, table_rows, wait_for

WRITE_TIMEOUT_S = 2
TRANSACTIONS = 3
ROWS_PER_TRANSACTION = 40_000  # 120,000 rows: far more than the queue's 64 × 512 events
PAD = 200  # bytes per row: the ~40 MB of binlog behind the queue overfill the sockets too
RECONNECTING = "lost the binlog connection; reconnecting"
CAUGHT_UP_STATE = "has sent all binlog"  # "Master has sent all binlog to slave; waiting …"


@pytest.fixture(
    scope="module",
    params=[
        # The reader raises its own session's net_write_timeout (to an hour), above the
        # server's 2 s: the server waits for it.
        pytest.param({}, id="session-timeout"),
        # The server caps what a session may set, so the reader's SET SESSION is cut to 2 s
        # and the server hangs up on it, as on any pause longer than the session's timeout.
        pytest.param({"maximum_net_write_timeout": WRITE_TIMEOUT_S}, id="capped"),
    ],
)
def impatient_server(
    mariadb_factory: MariaDbFactory, request: pytest.FixtureRequest
) -> Iterator[MariaDbServer]:
    """A server of this module's own with net_write_timeout = 2 (capped, or not)."""
    settings: dict[str, int] = request.param
    name = "pause_capped" if settings else "pause"
    server = mariadb_factory(name, net_write_timeout=WRITE_TIMEOUT_S, **settings)
    yield server
    server.destroy()  # now rather than at the session's end: this machine is small


@pytest.fixture
def impatient_database(impatient_server: MariaDbServer) -> Iterator[MysqlDatabase]:
    """A fresh database on the impatient server with a DSN for a user allowed everything."""
    password = secrets.token_urlsafe(12)
    impatient_server.create_user("repl", password)
    name = f"p_{secrets.token_hex(4)}"
    impatient_server.create_database(name)
    yield MysqlDatabase(name, impatient_server, impatient_server.dsn("repl", password, name))
    impatient_server.drop_database(name)


def wait_running(pipeline: RunningPipeline, done: Callable[[], bool], what: str) -> None:
    """Wait (generously) until ``done()``, or raise the pipeline's error."""
    wait_for(lambda: pipeline.error is not None or done(), 180, what)
    if pipeline.error is not None:
        raise pipeline.error


def dump_states(server: MariaDbServer) -> list[str]:
    """The states of the server's binlog dump threads (none once it hung up on them)."""
    rows = server.execute(
        "SELECT STATE FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'"
    )
    return [str(row[0]) for row in rows]


def write_while_paused(db: MysqlDatabase) -> None:
    """Three 40,000-row inserts, then an update of every third row and some deletes."""
    for t in range(TRANSACTIONS):
        first = 1001 + t * ROWS_PER_TRANSACTION
        last = first + ROWS_PER_TRANSACTION - 1
        db.execute(
            f"INSERT INTO items SELECT seq, {t}, REPEAT('{t}', {PAD}) FROM seq_{first}_to_{last}"
        )
    db.execute("UPDATE items SET n = n + 100, pad = REPEAT('u', 150) WHERE id % 3 = 0")
    db.execute("DELETE FROM items WHERE id % 7 = 0 AND id < 20000")


def test_a_pause_outlasts_net_write_timeout_behind_a_full_queue(
    impatient_database: MysqlDatabase, target_dsn: str
) -> None:
    """Paused for 4 × net_write_timeout with 120,000 inserts, 40,000 updates and some
    deletes queued behind it, the pipeline applies nothing meanwhile, and on resume the
    target ends equal to the source, row by row, whether or not the server hung up."""
    db = impatient_database
    table = f"{db.name}.items"
    db.execute("CREATE TABLE items (id INT PRIMARY KEY, n INT NOT NULL, pad VARCHAR(255))")
    db.execute(f"INSERT INTO items SELECT seq, 0, REPEAT('s', {PAD}) FROM seq_1_to_1000")
    config = mysql_pipeline_config("paused", db.dsn, target_dsn, [f"{db.name}.*"])
    with capture_logs() as logs, in_process(config) as running:
        wait_running(running, lambda: snapshot_done(target_dsn, "paused", 1), "the snapshot")
        running.pipeline.pause()
        wait_running(running, lambda: running.pipeline.state == "paused", "the pause")
        held = checkpoint(target_dsn, "paused")
        rows = table_rows(target_dsn, table)
        write_while_paused(db)
        time.sleep(4 * WRITE_TIMEOUT_S)
        # The server still has binlog to send (or gave up sending it): the reader is
        # not reading, so the pause really kept the server waiting all this time.
        assert not any(CAUGHT_UP_STATE in s for s in dump_states(db.server))
        assert running.error is None, running.error
        assert running.pipeline.state == "paused"
        assert checkpoint(target_dsn, "paused") == held
        assert table_rows(target_dsn, table) == rows, "the target changed while paused"
        running.pipeline.resume()
        goal = source_order(db.server)
        wait_running(
            running,
            lambda: checkpoint_order(target_dsn, "paused") >= goal,
            "the pipeline to catch up after the resume",
        )
    reconnects = [entry for entry in logs if entry.get("event") == RECONNECTING]
    print(f"binlog reconnects: {len(reconnects)} {reconnects}")  # shown with -s / -rP
    assert_same_tables(db.dsn, target_dsn, [table])
