"""PostgreSQL → PostgreSQL under a random workload, run through the CLI, with a failpoint at
each step of the commit protocol (DESIGN invariant 1; reliability plan §6, scenario 2).

A random SIGKILL loop is tests/e2e/test_crash_loop.py's; these tests land the crash (or a
transient error) exactly on each step instead, and prove after each one that the slot never
got ahead of the checkpoint and that a restart converges to the source, row by row.
"""

from __future__ import annotations

import time

import pytest

from tests.faults.faultkit import (
    TRANSIENT,
    Engines,
    assert_slot_not_ahead,
    converge_and_compare,
    first_run,
    pg_checkpoint,
    pg_to_pg,
    seeded,
)
from tests.support import checkpoint_lsn, slot_lsn
from tests.workload import TABLES

NAME = "faulty"
SLOT = f"replicator_{NAME}"

# The commit protocol's steps, in order (see Pipeline._flush and PostgresSink.apply).
KILL_POINTS = (
    "pipeline.before_apply",  # nothing of the batch sent yet
    "sink.before_commit",  # data and checkpoint written in the open target transaction
    "pipeline.after_commit",  # committed, the source not acknowledged
    "pipeline.after_acknowledge",  # acknowledged
)


@pytest.mark.slow
def test_a_kill_at_each_commit_step_loses_nothing(source_dsn, target_dsn, tmp_path):
    """Killed (SIGKILL by failpoint) before apply, before COMMIT, after COMMIT and after the
    acknowledgement, each at a random batch, then stalled before apply and before COMMIT long
    enough for any early acknowledgement to reach the server and killed: after each crash
    the slot is not past the target's checkpoint, and a restart converges to the source."""
    rnd = seeded("kill at each commit step")
    config, load = pg_to_pg(source_dsn, target_dsn, tmp_path, rnd, NAME, shutdown_timeout_s=20)
    checkpoint = pg_checkpoint(target_dsn, NAME)
    with Engines(tmp_path) as engines:
        first_run(engines, config, load, source_dsn, target_dsn, NAME)
        rounds = [(point, "kill") for point in KILL_POINTS]
        rounds += [("pipeline.before_apply", "stall"), ("sink.before_commit", "stall")]
        for point, how in rounds:
            at = rnd.randint(2, 25)
            what = f"{point} {how} at pass {at}"
            print(what)
            if how == "kill":
                engine = engines.spawn(config, f"{point}=kill@{at}")
                fired = engine.wait_killed_by(point, 90)
            else:
                # A stall before the batch is applied, or written but not committed; the
                # reader keeps sending status updates meanwhile, so that an acknowledgement
                # made too early reaches the server before the SIGKILL.
                engine = engines.spawn(config, f"{point}=sleep:60@{at}")
                fired = engine.wait_fired(point, 90)
                time.sleep(1.5)
                assert engine.alive, f"{what}: the engine died while stalled\n{engine.tail()}"
                engine.kill()
            assert fired.passes == at, (what, fired)
            assert_slot_not_ahead(source_dsn, SLOT, checkpoint, what)
            clean = engines.spawn(config, label=f"restart after {what}")
            converge_and_compare(load, source_dsn, target_dsn, NAME, TABLES, clean)
            code, _ = clean.terminate()
            assert code == 0, clean.tail()
            assert slot_lsn(source_dsn, SLOT) <= checkpoint()
        load.stop()
        log = engines.text()
    assert load.transactions > 50, load.transactions
    assert "Traceback" not in log, log[-4000:]


@pytest.mark.slow
def test_a_transient_error_before_or_after_commit_is_retried_in_process(
    source_dsn, target_dsn, tmp_path
):
    """A transient error raised before COMMIT and another after it (each at a random batch)
    restart the pipeline from its checkpoint inside the same process, which goes on running
    and converges to the source."""
    rnd = seeded("raise around the commit")
    config, load = pg_to_pg(source_dsn, target_dsn, tmp_path, rnd, NAME, shutdown_timeout_s=20)
    with Engines(tmp_path) as engines:
        first_run(engines, config, load, source_dsn, target_dsn, NAME)
        before, after = rnd.randint(2, 25), rnd.randint(2, 40)
        print(f"sink.before_commit raise at pass {before}, pipeline.after_commit at {after}")
        engine = engines.spawn(
            config, f"sink.before_commit=raise@{before};pipeline.after_commit=raise@{after}"
        )
        assert engine.wait_fired("sink.before_commit", 90).passes == before
        assert engine.wait_fired("pipeline.after_commit", 90).passes == after
        converge_and_compare(load, source_dsn, target_dsn, NAME, TABLES, engine)
        assert engine.alive, engine.tail()
        log = engines.text()
        assert log.count(TRANSIENT) == 2, log[-4000:]
        assert "failpoint sink.before_commit fired" in log
        assert "failpoint pipeline.after_commit fired" in log
        load.stop()
        converge_and_compare(None, source_dsn, target_dsn, NAME, TABLES, engine)
        code, _ = engine.terminate()
        assert code == 0, engine.tail()
    assert slot_lsn(source_dsn, SLOT) == checkpoint_lsn(target_dsn, NAME)
    assert "Traceback" not in engines.text()
