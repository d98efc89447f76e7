"""``replicator dlq``: inspect the dead-letter queue, replay entries after a fix, discard them.

Replays are applied by the running pipeline (the only writer of its target tables, so a
replay never races the stream); the command asks for them and waits for the outcome.
Discards record who discarded the entry, when, and why.
"""

from __future__ import annotations

import getpass
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from replicator.config import Config, PipelineConfig
from replicator.dlq.entry import DISCARDED, OPEN, REPLAY, STATUSES, DeadLetter
from replicator.dlq.store import DeadLetterStore
from replicator.errors import ConfigError
from replicator.events import TableId

app = typer.Typer(
    help="Inspect, replay or discard changes the target would not take.",
    no_args_is_help=True,
)

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="YAML config file.", show_default=False)
]
PipelineOption = Annotated[
    str | None,
    typer.Option("--pipeline", "-p", help="The pipeline (needed when the file has several)."),
]
IdsArgument = Annotated[
    list[int] | None, typer.Argument(help="Entry numbers (see dlq list).", show_default=False)
]
_POLL = 0.5


def _open(config: Path, pipeline: str | None) -> tuple[PipelineConfig, DeadLetterStore]:
    from replicator.config import load_config
    from replicator.engine.registry import make_dead_letter_store

    cfg: Config = load_config(config)
    if pipeline is None:
        if len(cfg.pipelines) != 1:
            names = ", ".join(p.name for p in cfg.pipelines)
            raise ConfigError(f"the config has several pipelines ({names}): choose one with -p")
        chosen = cfg.pipelines[0]
    else:
        chosen = cfg.pipeline(pipeline)
    return chosen, make_dead_letter_store(chosen)


def _summary(entry: DeadLetter) -> str:
    key = ", ".join(f"{k}={v}" for k, v in (entry.key or {}).items()) or "-"
    why = entry.rule or entry.error.splitlines()[0]
    return (
        f"{entry.id:>6}  {entry.status:<10} {entry.kind:<8} {entry.op.name.lower():<8} "
        f"{entry.table}  [{key}]  attempts={entry.attempts}  {why}"
    )


@app.command("list")
def list_entries(
    config: ConfigOption,
    pipeline: PipelineOption = None,
    status: Annotated[
        str, typer.Option(help="open (pending or replay), all, or one status.")
    ] = "open",
    table: Annotated[str | None, typer.Option(help="Only this schema.table.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List dead-letter entries, newest first."""
    from replicator.cli import _user_errors

    with _user_errors():
        if status not in ("open", "all", *STATUSES):
            raise ConfigError(f"--status takes open, all or one of {', '.join(STATUSES)}")
        chosen, store = _open(config, pipeline)
        try:
            wanted = None if status in ("open", "all") else status
            where = _table(table)
            found = store.entries(chosen.name, status=wanted, table=where, limit=limit)
            if status == "open":
                found = [e for e in found if e.status in OPEN]
            counts = store.counts(chosen.name)
        finally:
            store.close()
        if as_json:
            for entry in found:
                typer.echo(json.dumps(_public(entry), default=str))
            return
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "empty"
        typer.echo(f"pipeline {chosen.name}: dead-letter queue {summary}")
        for entry in found:
            typer.echo(_summary(entry))


@app.command()
def show(
    config: ConfigOption,
    entry_id: Annotated[int, typer.Argument(help="The entry's number.", show_default=False)],
    pipeline: PipelineOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="As JSON.")] = False,
) -> None:
    """Show one entry: its event, error, rule, position and history."""
    from replicator.cli import _user_errors

    with _user_errors():
        chosen, store = _open(config, pipeline)
        try:
            entry = store.get(chosen.name, entry_id)
        finally:
            store.close()
        if entry is None:
            raise ConfigError(f"pipeline {chosen.name} has no dead-letter entry {entry_id}")
        doc = _public(entry)
        if as_json:
            typer.echo(json.dumps(doc, indent=2, default=str))
            return
        for name in (
            "id", "status", "kind", "table", "op", "key", "error", "sqlstate", "rule",
            "attempts", "position", "held_behind", "created_at", "resolved_at",
            "resolved_by", "note",
        ):  # fmt: skip
            if doc.get(name) is not None:
                value = doc[name]
                text = json.dumps(value, default=str) if isinstance(value, dict) else value
                typer.echo(f"{name + ':':<13}{text}")
        typer.echo("event:")
        typer.echo(json.dumps(doc["event"], indent=2, default=str))


@app.command()
def replay(
    config: ConfigOption,
    ids: IdsArgument = None,
    pipeline: PipelineOption = None,
    all_open: Annotated[bool, typer.Option("--all", help="Every open entry.")] = False,
    wait: Annotated[
        float, typer.Option(min=0, help="Seconds to wait for the running pipeline's outcome.")
    ] = 60.0,
) -> None:
    """Apply entries again (after fixing the cause), with the changes held behind them.

    The running pipeline applies them at its next transaction boundary; exit code 1 when
    some were refused again."""
    from replicator.cli import _fail, _user_errors

    with _user_errors():
        chosen, store = _open(config, pipeline)
        try:
            targets = _chosen_ids(store, chosen.name, ids, all_open)
            marked = store.mark(chosen.name, targets, REPLAY, by=_who())
            if not marked:
                typer.echo("nothing to replay: no open entry among those")
                return
            typer.echo(
                f"replay requested for {len(marked)} entr{'y' if len(marked) == 1 else 'ies'}"
            )
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                states = [store.get(chosen.name, i) for i in marked]
                if all(e is None or e.status != REPLAY for e in states):
                    break
                time.sleep(_POLL)
            else:
                typer.echo(
                    f"pipeline {chosen.name} has not applied them yet (is it running?); it "
                    "applies them when it runs"
                )
                return
        finally:
            store.close()
        replayed = [e for e in states if e is not None and e.status == "replayed"]
        failed = [e for e in states if e is not None and e.status in OPEN]
        typer.echo(f"replayed {len(replayed)}; still open {len(failed)}")
        for entry in failed:
            typer.echo(_summary(entry))
        if failed:
            raise _fail(
                f"{len(failed)} entr{'y was' if len(failed) == 1 else 'ies were'} refused "
                "again or held behind one",
                1,
            )


@app.command()
def discard(
    config: ConfigOption,
    ids: IdsArgument = None,
    pipeline: PipelineOption = None,
    all_open: Annotated[bool, typer.Option("--all", help="Every open entry.")] = False,
    by: Annotated[str | None, typer.Option(help="Who discards (default: the OS user).")] = None,
    note: Annotated[str | None, typer.Option(help="Why, for the record.")] = None,
) -> None:
    """Drop entries without applying them, recording who, when and why.

    Their keys are released; the running pipeline notices within a few seconds."""
    from replicator.cli import _user_errors

    with _user_errors():
        chosen, store = _open(config, pipeline)
        try:
            targets = _chosen_ids(store, chosen.name, ids, all_open)
            done = store.mark(chosen.name, targets, DISCARDED, by=by or _who(), note=note)
        finally:
            store.close()
        typer.echo(f"discarded {_entries(len(done))}")


def _chosen_ids(
    store: DeadLetterStore, pipeline: str, ids: list[int] | None, all_open: bool
) -> list[int]:
    if bool(ids) == all_open:
        raise ConfigError("name entry numbers or give --all (not both)")
    if all_open:
        return [e.id for e in store.open_entries(pipeline) if e.id is not None]
    return list(ids or [])


def _table(text: str | None) -> TableId | None:
    if text is None:
        return None
    schema, dot, name = text.partition(".")
    if not dot or not schema or not name:
        raise ConfigError(f"--table takes schema.table, not {text!r}")
    return TableId(schema, name)


def _entries(n: int) -> str:
    return f"{n} entr{'y' if n == 1 else 'ies'}"


def _who() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        return "unknown"


def _public(entry: DeadLetter) -> dict[str, Any]:
    doc = entry.as_dict()
    doc.pop("entry_key", None)
    return doc
