"""The ``replicator`` command line: a thin layer over the engine.

Exit codes: 0 ok, 1 runtime failure (or problems found by ``check``), 2 bad usage or config.
User errors print ``Error: <what> / Fix: <how>`` on stderr, never a traceback.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Annotated, Any
from urllib.parse import quote

import typer

from replicator import failpoints
from replicator.api.client import ApiClient
from replicator.api.server import ManagementApi
from replicator.config import Config, PipelineConfig, load_config
from replicator.contracts import CheckpointStore, Severity
from replicator.dlq import commands as dlq_commands
from replicator.engine.registry import make_checkpoint_store, make_pipeline, make_source
from replicator.engine.status import table_progress
from replicator.engine.supervisor import Supervisor
from replicator.errors import ConfigError, ReplicatorError
from replicator.events import TableId
from replicator.observability import tracing
from replicator.observability.logging import configure_logging, get_logger
from replicator.observability.redaction import configure_redaction, redact

app = typer.Typer(
    name="replicator",
    help="Change data capture that keeps a PostgreSQL target an exact copy of its source.",
    add_completion=False,
    no_args_is_help=True,
    # Typer's pretty tracebacks print frame locals, which can hold passwords.
    pretty_exceptions_enable=False,
)

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="YAML config file.", show_default=False)
]
PipelineOption = Annotated[
    list[str] | None,
    typer.Option("--pipeline", "-p", help="Only this pipeline (repeatable).", show_default=False),
]


app.add_typer(dlq_commands.app, name="dlq")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"replicator {metadata.version('replicator')}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Change data capture that keeps a PostgreSQL target an exact copy of its source."""


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"Error: {redact(message)}", err=True)
    return typer.Exit(code)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn Replicator errors into ``Error: …`` and an exit code; hide tracebacks."""
    try:
        yield
    except ReplicatorError as exc:
        raise _fail(str(exc), exc.exit_code) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except typer.Exit:
        raise
    except Exception as exc:  # noqa: BLE001 - a bug: say so, without leaking secrets
        if os.environ.get("REPLICATOR_DEBUG"):
            typer.echo(redact(traceback.format_exc()), err=True)
        raise _fail(
            f"unexpected {type(exc).__name__}: {exc} (set REPLICATOR_DEBUG=1 for a traceback)",
            1,
        ) from None


def _load(path: Path, pipelines: list[str] | None) -> tuple[Config, list[PipelineConfig]]:
    config = load_config(path)
    chosen = [config.pipeline(name) for name in pipelines] if pipelines else config.pipelines
    return config, chosen


@app.command()
def run(
    config: ConfigOption,
    pipeline: PipelineOption = None,
    log_level: Annotated[
        str | None, typer.Option(help="debug, info, warning or error (overrides the config).")
    ] = None,
    log_format: Annotated[
        str | None, typer.Option(help="console or json (overrides the config).")
    ] = None,
) -> None:
    """Run the pipelines until SIGTERM/SIGINT: finish the batch, checkpoint, exit 0."""
    with _user_errors():
        cfg, chosen = _load(config, pipeline)
        level = log_level or cfg.logging.level
        fmt = log_format or cfg.logging.format
        if level not in ("debug", "info", "warning", "error") or fmt not in ("console", "json"):
            raise ConfigError(
                "--log-level takes debug|info|warning|error; --log-format console|json"
            )
        configure_logging(level, fmt)
        log = get_logger()
        failpoints.configure(os.environ.get(failpoints.ENV))
        configure_redaction(cfg.logging.redact_columns)
        tracing.configure_tracing(cfg.observability)
        supervisor = Supervisor(cfg, config, pipeline, isolate_failures=cfg.api is not None)
        api = ManagementApi(cfg.api, supervisor) if cfg.api is not None else None
        # The reader threads decode in pure Python while the apply threads wait on the target;
        # a short GIL switch interval lets a waiting thread resume within half a millisecond
        # instead of five, which cut a checkpoint commit's latency from ~50 ms to ~2 ms.
        sys.setswitchinterval(0.0005)
        reload_wanted = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            if supervisor.stopping.is_set():
                log.warning(
                    "second stop signal: exiting now, without waiting for the batch; the next "
                    "run resumes from the last checkpoint"
                )
                _exit_now(1)
            log.info(
                "stopping: finishing the current batch",
                signal=signal.Signals(signum).name,
                timeout_s=cfg.shutdown_timeout_s,
            )
            supervisor.shutdown_async()

        def on_hangup(signum: int, frame: FrameType | None) -> None:
            reload_wanted.set()  # reloading blocks: done by the main loop, not in the handler

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGHUP, on_hangup)
        if api is not None:
            api.start()
        supervisor.start()
        try:
            while supervisor.running() and not supervisor.stopping.is_set():
                if reload_wanted.wait(0.2):
                    reload_wanted.clear()
                    _reload(supervisor, log)
        finally:
            supervisor.shutdown_async()
            stuck = supervisor.join(cfg.shutdown_timeout_s)
            if stuck:
                # Exiting with a batch open is a crash the checkpoint protocol is made for:
                # nothing uncommitted was acknowledged, and the next run resumes exactly.
                log.error(
                    "pipelines did not stop within shutdown_timeout_s; exiting without them "
                    "(the next run resumes from the last checkpoint)",
                    pipelines=", ".join(stuck),
                    timeout_s=cfg.shutdown_timeout_s,
                )
                _exit_now(1)
            if api is not None:
                api.stop()
            tracing.shutdown_tracing()
        failures = supervisor.failures()
        if failures:
            for name, exc in failures[1:]:
                log.error("pipeline failed", pipeline=name, error=str(exc))
            name, exc = failures[0]
            if isinstance(exc, ReplicatorError):
                raise _fail(f"pipeline {name}: {exc}", exc.exit_code)
            raise _fail(f"pipeline {name}: unexpected {type(exc).__name__}: {exc}", 1)


def _exit_now(code: int) -> None:
    """Exit at once, without waiting for pipeline threads (their work is safe to abandon)."""
    logging.shutdown()
    sys.stderr.flush()
    os._exit(code)


def _reload(supervisor: Supervisor, log: Any) -> None:
    """SIGHUP: reload the config file; an invalid one is logged and changes nothing."""
    try:
        result = supervisor.reload()
    except ConfigError as exc:
        log.error("configuration not reloaded: the file is invalid", error=exc.message)
        return
    if result.failed:
        log.warning("some pipelines did not reload", failed=result.failed)


@app.command()
def check(config: ConfigOption, pipeline: PipelineOption = None) -> None:
    """Check sources and targets; print each problem with its fix (exit 1 if any error)."""
    with _user_errors():
        _, chosen = _load(config, pipeline)
        configure_logging("warning", "console")
        errors = 0
        for p in chosen:
            typer.echo(f"pipeline {p.name}:")
            checker = make_pipeline(p, threading.Event())
            try:
                problems = checker.check(checker.load_checkpoint())
            except ReplicatorError as exc:
                typer.echo(f"  ERROR    {redact(exc.message)}")
                if exc.fix:
                    typer.echo(f"           fix: {redact(exc.fix)}")
                errors += 1
                continue
            finally:
                checker.close()
            if not problems:
                typer.echo("  ok: ready to run")
            for problem in problems:
                label = "ERROR  " if problem.severity is Severity.ERROR else "WARNING"
                typer.echo(f"  {label}  {redact(problem.message)}")
                if problem.fix:
                    typer.echo(f"           fix: {redact(problem.fix)}")
                errors += problem.severity is Severity.ERROR
        if errors:
            raise typer.Exit(1)


@app.command()
def status(
    config: ConfigOption,
    pipeline: PipelineOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Per pipeline: phase, confirmed position, lag in bytes and seconds, rows applied.

    Asks the running instance when its management API answers, else reads the checkpoint
    store and the source directly.
    """
    with _user_errors():
        cfg, chosen = _load(config, pipeline)
        configure_logging("warning", "console")
        client = ApiClient(cfg.api) if cfg.api is not None else None
        if client is not None and client.reachable():
            _live_status(client, {p.name for p in chosen}, as_json)
            return
        reports = [_status_of(p) for p in chosen]
        if as_json:
            typer.echo(json.dumps(reports, indent=2, default=_json_default))
            return
        for report in reports:
            typer.echo(f"pipeline {report['pipeline']}: {report['phase']}")
            for key, value in report.items():
                if key not in ("pipeline", "phase", "snapshot") and value is not None:
                    typer.echo(f"  {key.replace('_', ' ')}: {_human(value)}")
            for table in report["snapshot"]:
                typer.echo(f"  snapshot {table['table']}: {_describe_copy(table)}")


def _live_status(client: ApiClient, names: set[str], as_json: bool) -> None:
    views = [v for v in client.get("/pipelines")["pipelines"] if v["name"] in names]
    if as_json:
        # "pipeline" and "phase" as in the offline report, so scripts read either the same way.
        both = [{"pipeline": v["name"], "phase": v["state"], **v} for v in views]
        typer.echo(json.dumps(both, indent=2))
        return
    typer.echo(f"live, from the instance at {client.address}:")
    shown = ("position", "lag_seconds", "source_lag_bytes", "retained_bytes")
    for view in views:
        typer.echo(f"pipeline {view['name']}: {view['state']}")
        for key in shown + ("consumer_lag_messages", "events_per_second", "paused_at"):
            if view.get(key) is not None:
                typer.echo(f"  {key.replace('_', ' ')}: {_human(view[key])}")
        counters = view["counters"]
        typer.echo("  applied: " + ", ".join(f"{v} {k}" for k, v in counters.items()))
        if view["last_error"]:
            error = view["last_error"]
            typer.echo(f"  last error ({error['at']}): {error['message']}")
        for table in view["snapshot"]:
            typer.echo(f"  snapshot {table['table']}: {_describe_copy(table)}")


def _describe_copy(table: dict[str, Any]) -> str:
    text = f"{table['state']}, {table['rows_copied']} rows"
    if table["rows_estimated"] is not None and table["state"] != "done":
        text += f" of ~{table['rows_estimated']}"
    if table["rows_per_second"] is not None:
        text += f", {table['rows_per_second']} rows/s"
    if table["eta_seconds"] is not None:
        text += f", about {table['eta_seconds']} s left"
    return text


def _status_of(p: PipelineConfig) -> dict[str, Any]:
    store = make_checkpoint_store(p)
    source = make_source(p)
    try:
        checkpoint = store.load(p.name)
        position = source.parse_position(checkpoint.position) if checkpoint else None
        recorded = store.read_status(p.name) or {}
        side = source.status(position)
        tables = store.snapshot_tables(p.name)
    finally:
        source.close()
        store.close()
    phase = recorded.get("phase") or ("not started" if checkpoint is None else "stopped")
    heartbeat_recent = _recent(recorded.get("heartbeat_age_s"), 30)
    active = side.get("slot_active", side.get("active"))
    # While copying, the slot is not streamed yet: the recorded heartbeat says it runs. A
    # source that cannot tell whether its reader is connected is judged by the heartbeat.
    running = bool(active) or (
        (phase in ("starting", "snapshotting") or active is None) and heartbeat_recent
    )
    if phase == "streaming" and not running:
        phase = "not running (it stopped without a clean shutdown)"
    stats = checkpoint.stats if checkpoint else {}
    lag_seconds = recorded.get("lag_seconds") if running else None
    if running and side.get("lag_bytes", 0) == 0:
        lag_seconds = 0.0
    report: dict[str, Any] = {
        "pipeline": p.name,
        "phase": phase,
        "checkpoint": str(position) if position is not None else None,
    }
    if p.source.type == "postgres":
        report.update(
            slot=side.get("slot"),
            slot_confirmed=side.get("confirmed_flush_lsn"),
            source_wal=side.get("source_wal_lsn"),
            lag_bytes=side.get("lag_bytes"),
            lag_seconds=lag_seconds,
            retained_wal_bytes=side.get("retained_wal_bytes"),
        )
    else:
        report.update({k: v for k, v in side.items() if k != "active"})
        report["lag_seconds"] = lag_seconds
    report.update(
        transactions=stats.get("transactions"),
        rows_inserted=stats.get("rows_inserted"),
        rows_updated=stats.get("rows_updated"),
        rows_deleted=stats.get("rows_deleted"),
        truncates=stats.get("truncates"),
        last_source_commit=stats.get("source_commit_ts"),
        pid=recorded.get("pid") if running else None,
        last_error=recorded.get("last_error"),
        snapshot=[table_progress(t) for t in tables],
    )
    return report


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _human(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _client(config: Path) -> ApiClient:
    cfg = load_config(config)
    if cfg.api is None:
        raise ConfigError(
            "this command talks to the running instance's management API, and the config "
            "has no api section",
            fix="add api: {listen: 127.0.0.1:8080, token_env: REPLICATOR_API_TOKEN} and "
            "restart replicator run",
        )
    return ApiClient(cfg.api)


def _act(config: Path, pipelines: list[str] | None, action: str) -> None:
    with _user_errors():
        configure_logging("warning", "console")
        client = _client(config)
        names = pipelines or [v["name"] for v in client.get("/pipelines")["pipelines"]]
        for name in names:
            reply = client.post(f"/pipelines/{quote(name, safe='')}/{action}")
            state = reply["state"]
            if action == "pause" and state != "paused":
                state += " (pauses at its next transaction boundary)"
            typer.echo(f"pipeline {name}: {action} done; {state}")


@app.command()
def pause(config: ConfigOption, pipeline: PipelineOption = None) -> None:
    """Pause running pipelines (all by default) through the instance's management API."""
    _act(config, pipeline, "pause")


@app.command()
def resume(config: ConfigOption, pipeline: PipelineOption = None) -> None:
    """Resume paused pipelines (all by default) through the instance's management API."""
    _act(config, pipeline, "resume")


@app.command()
def reload(config: ConfigOption) -> None:
    """Make the running instance re-read its config file (as SIGHUP does); an invalid file
    is refused with its problems and the running config stays."""
    with _user_errors():
        configure_logging("warning", "console")
        client = _client(config)
        result = client.post("/config/reload")
        for key in ("added", "removed", "restarted", "unchanged"):
            if result[key]:
                typer.echo(f"{key}: {', '.join(result[key])}")
        for name, why in result["failed"].items():
            typer.echo(f"not reloaded: {name}: {why}")
        for note in result["notes"]:
            typer.echo(f"note: {note}")
        if result["failed"]:
            raise typer.Exit(1)


@app.command()
def drop(
    config: ConfigOption,
    pipeline: Annotated[
        str, typer.Option("--pipeline", "-p", help="The pipeline to remove.", show_default=False)
    ],
) -> None:
    """Remove a pipeline's replication slot, publication and checkpoint (target tables stay)."""
    with _user_errors():
        cfg = load_config(config)
        p = cfg.pipeline(pipeline)
        configure_logging("warning", "console")
        source = make_source(p)
        store = make_checkpoint_store(p)
        try:
            removed = source.drop()
            if store.delete(p.name):
                removed.append("checkpoint")
        finally:
            source.close()
            store.close()
        if not removed:
            typer.echo(f"pipeline {p.name}: nothing to remove")
        for line in removed:
            typer.echo(f"pipeline {p.name}: removed {line}")


@app.command("sync-sequences")
def sync_sequences(config: ConfigOption, pipeline: PipelineOption = None) -> None:
    """Set the target's sequences at or above the source's, for cutover (never moves one back)."""
    from replicator.sequences import SequenceSync

    with _user_errors():
        _, chosen = _load(config, pipeline)
        # Each result is printed below; warnings logged as well would say everything twice.
        configure_logging("error", "console")
        failed = 0
        for p in chosen:
            typer.echo(f"pipeline {p.name}:")
            if p.source.type != "postgres":
                typer.echo(f"  nothing to do: a {p.source.type} source has no sequences")
                continue
            syncer = SequenceSync(p)
            try:
                results = syncer.run()
            except ReplicatorError as exc:
                typer.echo(f"  ERROR  {redact(exc.message)}")
                if exc.fix:
                    typer.echo(f"         fix: {redact(exc.fix)}")
                failed += 1
                continue
            finally:
                syncer.close()
            if not results:
                typer.echo("  no sequences: none is owned or used by the captured tables,")
                typer.echo("  and none matches source.tables")
            for result in results:
                typer.echo(f"  {redact(result.summary())}")
                if result.fix:
                    typer.echo(f"    fix: {redact(result.fix)}")
                failed += result.failed
        if failed:
            raise _fail(f"{failed} sequence(s) or pipeline(s) not synchronised; see above", 1)


@app.command()
def snapshot(
    config: ConfigOption,
    pipeline: Annotated[
        str,
        typer.Option("--pipeline", "-p", help="The pipeline to re-copy for.", show_default=False),
    ],
    tables: Annotated[
        list[str],
        typer.Option(
            "--tables",
            "-t",
            help="Schema-qualified glob of captured tables to re-copy (repeatable).",
            show_default=False,
        ),
    ],
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait until the copy is done.")
    ] = True,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait at most.", min=1)
    ] = 3600.0,
) -> None:
    """Re-copy tables while the pipeline keeps streaming (an ad-hoc re-sync).

    Rows are copied into a shadow table that replaces the target's rows in one transaction:
    readers see the old rows until then, and rows gone from the source disappear.
    """
    with _user_errors():
        cfg = load_config(config)
        p = cfg.pipeline(pipeline)
        configure_logging("warning", "console")
        if p.source.type == "kafka":
            raise ConfigError(
                f"pipeline {p.name} reads Kafka, whose topics hold no table to copy",
                fix="re-copy on the watcher that publishes the topics (replicator snapshot -p "
                "WATCHER), or with Debezium's incremental snapshots",
            )
        store = make_checkpoint_store(p)
        try:
            captured = store.captured_tables(p.name)
            chosen = sorted({t for t in captured if any(t.matches(p) for p in tables)}, key=str)
            if not chosen:
                known = ", ".join(str(t) for t in sorted(captured, key=str)) or "none yet"
                raise ConfigError(
                    f"no table captured by pipeline {p.name} matches {', '.join(tables)}",
                    fix=f"use schema-qualified patterns such as public.orders; captured: {known}",
                )
            store.request_snapshot(p.name, chosen, resync=True)
            names = ", ".join(str(t) for t in chosen)
            typer.echo(f"pipeline {p.name}: re-copy requested for {names}")
            if wait:
                _wait_for_copies(store, p.name, set(chosen), timeout)
        finally:
            store.close()


def _wait_for_copies(
    store: CheckpointStore, pipeline: str, tables: set[TableId], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    shown: dict[TableId, str] = {}
    while True:
        recorded = store.read_status(pipeline) or {}
        states = {t.table: t for t in store.snapshot_tables(pipeline) if t.table in tables}
        for table, state in states.items():
            line = _describe_copy(table_progress(state))
            if shown.get(table) != line:
                shown[table] = line
                typer.echo(f"  {table}: {line}")
        if all(s.state == "done" for s in states.values()):
            typer.echo(f"pipeline {pipeline}: re-copy done")
            return
        running = ("starting", "streaming", "snapshotting", "paused")
        alive = recorded.get("phase") in running and _recent(recorded.get("heartbeat_age_s"), 60)
        if not alive:
            typer.echo(f"pipeline {pipeline} is not running: the copy starts when it next starts")
            return
        if time.monotonic() > deadline:
            raise _fail(
                f"gave up waiting after {timeout:.0f} s; the pipeline goes on copying (follow it "
                "with replicator status)",
                1,
            )
        time.sleep(1.0)


def _recent(age_seconds: Any, limit: float) -> bool:
    """Whether a recorded heartbeat age (None when unknown) is under ``limit`` seconds."""
    return age_seconds is not None and float(age_seconds) < limit


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - last resort: never a raw traceback
        sys.stderr.write(f"Error: {redact(str(exc))}\n")
        sys.exit(1)
