"""The demo, step by step: servers, sample shop, pipeline, live traffic, catch-up, verification."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from rich.console import Console, Group, JustifyMethod, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text
from tests.pgcluster import PgCluster, PgClusterError

from demo.db import (
    Conn,
    TableComparison,
    compare_table,
    connect,
    current_lsn,
    format_lsn,
    slot_state,
)
from demo.pipeline import SLOT, ReplicatorProcess, StatusView, write_config
from demo.shop import ACTIONS, TABLES, ShopSize, Traffic, create_schema, load_sample_data

_STEPS = 6
_REFRESH = 4  # display refreshes per second


class DemoError(Exception):
    """A step failed; the message says what happened and where to look."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; every option has a default, so ``make demo`` needs none."""
    parser = argparse.ArgumentParser(
        prog="python -m demo",
        description="Replicator copying a sample shop between two throw-away PostgreSQL servers.",
    )
    parser.add_argument(
        "--duration", type=float, default=12, help="seconds of live shop traffic (default 12)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=300,
        help="live transactions per second; 0 means as fast as possible (default 300)",
    )
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    parser.add_argument(
        "--orders", type=int, default=5000, help="orders in the sample shop (default 5000)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=120,
        help="seconds the snapshot plus the final catch-up may take (default 120)",
    )
    parser.add_argument(
        "--snapshot",
        choices=("initial", "never"),
        default="initial",
        help=(
            "the pipeline's snapshot setting (default initial); `never` skips copying the rows "
            "that exist before the pipeline starts, so the verification shows them missing"
        ),
    )
    parser.add_argument(
        "--keep-logs",
        action="store_true",
        help="keep the work folder (config and Replicator's log) after a successful run",
    )
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.rate < 0 or args.orders < 1 or args.timeout <= 0:
        parser.error("--duration, --orders and --timeout must be positive, --rate at least 0")
    return args


def _bytes(value: int | None) -> str:
    if value is None:
        return "?"
    size = float(value)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(size) < 1024 or unit == "GB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{value} B"  # pragma: no cover - the loop always returns


def _seconds(value: float) -> str:
    return "under 0.1s" if value < 0.1 else f"{value:.1f}s"


def _count(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


class LiveView:
    """A live-updating view on a terminal; elsewhere (CI, a pipe) a plain line every few
    seconds and the full view once at the end."""

    def __init__(
        self,
        console: Console,
        render: Callable[[], RenderableType],
        line: Callable[[], str],
        line_every: float = 2.0,
    ) -> None:
        """``render`` draws the full view, ``line`` a one-line summary of it."""
        self._console = console
        self._render = render
        self._line = line
        self._line_every = line_every
        self._last_line = time.monotonic()
        self._live: Live | None = None

    def __enter__(self) -> LiveView:
        if self._console.is_terminal:
            self._live = Live(self._render(), console=self._console, refresh_per_second=_REFRESH)
            self._live.__enter__()
        return self

    def update(self) -> None:
        """Redraw (terminal) or print a summary line when one is due (elsewhere)."""
        if self._live is not None:
            self._live.update(self._render())
        elif time.monotonic() - self._last_line >= self._line_every:
            self._last_line = time.monotonic()
            self._console.print(Text(self._line(), "dim"))

    def __exit__(self, *exc_info: object) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.__exit__(None, None, None)
        elif exc_info[0] is None:
            self._console.print(self._render())


@dataclass
class Timeline:
    """Monotonic moments of the run (None until they happen)."""

    pipeline_started: float | None = None
    snapshot_seen: float | None = None  # first status saying "snapshotting"
    snapshot_done: float | None = None  # first status with nothing left to copy
    traffic_finished: float | None = None
    caught_up: float | None = None


class Demo:
    """One run of the demo; ``cleanup`` must follow ``run``, whatever happens."""

    def __init__(self, args: argparse.Namespace, console: Console) -> None:
        """Prepare an empty run."""
        self.args = args
        self.console = console
        self.started = time.monotonic()
        self.workdir = Path(tempfile.mkdtemp(prefix="replicator-demo-"))
        self.clusters: list[PgCluster] = []
        self.replicator: ReplicatorProcess | None = None
        self.traffic: Traffic | None = None
        self.monitor: Conn | None = None  # source connection for WAL positions
        self.times = Timeline()
        self.initial_rows: dict[str, int] = {}
        self.snapshot_rows: int | None = None
        self.final_status = StatusView()
        self.final_lag: int | None = None
        self.comparisons: list[TableComparison] = []
        self.succeeded = False

    # -- output ------------------------------------------------------------------------------

    def step(self, number: int, title: str, explanation: str) -> None:
        """A step heading with one line of what happens and why."""
        self.console.print()
        self.console.rule(f"[bold]Step {number}/{_STEPS}: {title}", align="left")
        self.console.print(f"[dim]{explanation}")

    def say(self, message: str) -> None:
        """A progress line with the seconds since the start."""
        elapsed = time.monotonic() - self.started
        self.console.print(f"[dim]{elapsed:6.1f}s[/dim]  {message}")

    # -- the steps ---------------------------------------------------------------------------

    def run(self) -> int:
        """All steps; returns the exit code (0 only when the target equals the source)."""
        self.console.print(
            Panel(
                "[bold]Replicator demo[/bold]: change data capture from one PostgreSQL server to "
                "another. A sample web shop gets copied while it keeps taking orders; at the end "
                "every row of the copy is compared with the original.",
                border_style="cyan",
            )
        )
        self.start_servers()
        self.load_shop()
        self.start_pipeline()
        self.run_traffic()
        self.catch_up()
        self.verify()
        self.stop_pipeline()
        self.summary()
        return 0 if self.succeeded else 1

    def start_servers(self) -> None:
        """Step 1: two throw-away clusters."""
        self.step(
            1,
            "two throw-away PostgreSQL servers",
            "Each lives in its own folder under /tmp, listens on a random port of 127.0.0.1 "
            "and is deleted at the end. The source has wal_level=logical, which logical "
            "replication needs.",
        )
        for role in ("source", "target"):
            cluster = PgCluster.create(f"demo-{role}")
            self.clusters.append(cluster)
            self.say(
                f"{role} server: PostgreSQL {cluster.version} on port {cluster.port} "
                f"[dim]({cluster.folder})[/dim]"
            )
        source, target = self.clusters
        self.source_dsn = source.create_database("shop")
        self.target_dsn = target.create_database("shop_copy")
        self.say(
            "databases: [bold]shop[/bold] on the source, empty [bold]shop_copy[/bold] on the target"
        )
        self.monitor = connect(self.source_dsn)

    def load_shop(self) -> None:
        """Step 2: the sample shop in the source."""
        self.step(
            2,
            "a sample shop in the source database",
            "Schema shop: customers, products, orders and order_lines with foreign keys, "
            "numeric prices, timestamptz, jsonb, an enum order status, identity/serial keys and "
            "a generated line_total column. Rows come from a fixed random seed "
            f"({self.args.seed}).",
        )
        assert self.monitor is not None
        orders = self.args.orders
        size = ShopSize(
            customers=max(1, orders * 2 // 5), products=max(5, orders // 10), orders=orders
        )
        loaded = time.monotonic()
        create_schema(self.monitor)
        self.initial_rows = load_sample_data(self.monitor, size, self.args.seed)
        table = Table(box=None, padding=(0, 2))
        table.add_column("table")
        table.add_column("rows", justify="right")
        for name, rows in self.initial_rows.items():
            table.add_row(name, f"{rows:,}")
        table.add_row(
            Text("total", style="bold"), Text(f"{sum(self.initial_rows.values()):,}", "bold")
        )
        self.say(f"loaded in {time.monotonic() - loaded:.1f}s:")
        self.console.print(table)

    def start_pipeline(self) -> None:
        """Step 3: the config file and ``replicator run``."""
        self.step(
            3,
            "start Replicator",
            "One pipeline copies every table of schema shop. snapshot: initial means the rows "
            "that already exist are copied first; changes made meanwhile are streamed from a "
            "replication slot, so nothing is lost or applied twice.",
        )
        config = write_config(
            self.workdir / "replicator.yaml", self.source_dsn, self.target_dsn, self.args.snapshot
        )
        shown = config.read_text()
        for cluster in self.clusters:
            shown = shown.replace(cluster.password, "********")
        self.console.print(Panel(shown.rstrip(), title=str(config), title_align="left"))
        log = self.workdir / "replicator.log"
        self.replicator = ReplicatorProcess(config, log)
        self.replicator.start()
        self.times.pipeline_started = time.monotonic()
        self.say(f"started: replicator run -c {config}")
        self.say(f"its log: {log}")

    def run_traffic(self) -> None:
        """Step 4: live traffic on the source while the pipeline copies and streams."""
        self.step(
            4,
            "the shop keeps running",
            f"For {self.args.duration:g}s the shop takes new orders, changes prices, ships and "
            "cancels orders (deleting them with their lines) and updates customers, in many "
            "small transactions. Replicator copies the existing rows and streams these changes "
            "at the same time.",
        )
        assert self.monitor is not None
        with connect(self.source_dsn) as traffic_conn:
            self.traffic = Traffic(
                traffic_conn, self.args.seed + 1, self.args.duration, self.args.rate
            )
            self.traffic.start()
            with LiveView(self.console, self.render, self.status_line) as view:
                while self.traffic.running:
                    self.check_pipeline()
                    self.note_status()
                    view.update()
                    time.sleep(1 / _REFRESH)
                self.note_status()
            self.times.traffic_finished = time.monotonic()
        stats = self.traffic.stats
        if stats.error is not None:
            raise DemoError(f"the shop traffic failed: {stats.error}")
        self.say(
            f"traffic done: {stats.transactions:,} transactions in {stats.elapsed():.1f}s "
            f"({stats.transactions / max(stats.elapsed(), 1e-9):,.0f}/s)"
        )

    def catch_up(self) -> None:
        """Step 5: wait until the slot has confirmed everything the source wrote."""
        self.step(
            5,
            "wait for the target to catch up",
            "The source's WAL position right after the last change is the goal; the pipeline "
            "has caught up when its replication slot's confirmed_flush_lsn reaches it (it "
            "confirms only what is committed in the target).",
        )
        assert self.monitor is not None and self.replicator is not None
        goal = current_lsn(self.monitor)
        self.say(f"goal: source WAL position {format_lsn(goal)}")
        deadline = time.monotonic() + self.args.timeout
        with LiveView(
            self.console, lambda: self.render(goal), lambda: self.status_line(goal)
        ) as view:
            while True:
                self.check_pipeline()
                self.note_status()
                view.update()
                slot = slot_state(self.monitor, SLOT)
                status = self.replicator.status
                copied = status.snapshot_done or (status.updated == 0 and status.error is not None)
                if slot.confirmed_flush >= goal and copied:
                    break
                if time.monotonic() > deadline:
                    raise DemoError(
                        f"not caught up after {self.args.timeout:g}s: slot at "
                        f"{format_lsn(slot.confirmed_flush)}, goal {format_lsn(goal)}, phase "
                        f"{status.phase!r}.\nLast lines of the log:\n{self.replicator.log_tail()}"
                    )
                time.sleep(1 / _REFRESH)
        self.times.caught_up = time.monotonic()
        self.final_lag = slot_state(self.monitor, SLOT).lag_bytes
        self.final_status = self.replicator.query_status()
        self.note_status()
        assert self.times.traffic_finished is not None
        self.say(
            f"caught up {_seconds(self.times.caught_up - self.times.traffic_finished)} after "
            f"the last change (slot confirmed {format_lsn(slot.confirmed_flush)})"
        )

    def verify(self) -> None:
        """Step 6: every table compared row by row."""
        self.step(
            6,
            "compare source and target, row by row",
            "Every row of every table, all columns (the generated line_total included), as "
            "text, sorted; the two sides must be identical.",
        )
        with connect(self.source_dsn) as source, connect(self.target_dsn) as target:
            self.comparisons = [compare_table(source, target, table) for table in TABLES]
        result = Table(box=None, padding=(0, 2))
        columns: list[tuple[str, JustifyMethod]] = [
            ("table", "left"),
            ("source rows", "right"),
            ("target rows", "right"),
            ("result", "left"),
        ]
        for column, justify in columns:
            result.add_column(column, justify=justify)
        for c in self.comparisons:
            if c.ok:
                verdict = Text("identical ✓", style="green")
            elif c.error is not None:
                verdict = Text(f"cannot read the target table: {c.error}", style="red")
            else:
                verdict = Text(
                    f"{c.missing_count:,} rows missing, {c.unexpected_count:,} unexpected ✗",
                    style="red",
                )
            result.add_row(c.table, f"{c.source_rows:,}", f"{c.target_rows:,}", verdict)
        self.console.print(result)
        for c in self.comparisons:
            for label, examples in (("missing", c.missing), ("unexpected", c.unexpected)):
                for example in examples[:2]:
                    shown = example if len(example) <= 110 else example[:109] + "…"
                    self.console.print(
                        Text.assemble("  e.g. ", (label, "red"), f" in {c.table}: {shown}")
                    )
        self.succeeded = all(c.ok for c in self.comparisons)

    def stop_pipeline(self) -> None:
        """SIGTERM: finish the batch, checkpoint, exit 0."""
        assert self.replicator is not None
        self.replicator.stop_polling()
        self.say("stopping Replicator with SIGTERM")
        code = self.replicator.terminate()
        if code == 0:
            self.say("Replicator stopped cleanly (exit code 0)")
        else:
            self.succeeded = False
            shown = "none: killed after 60s" if code is None else str(code)
            self.console.print(
                Text(
                    f"Replicator did not stop cleanly (exit code {shown}); last lines of its log:",
                    "red",
                )
            )
            self.console.print(Text(self.replicator.log_tail()))

    def summary(self) -> None:
        """The short report at the end."""
        self.console.print()
        self.console.rule("[bold]Summary", align="left")
        times = self.times
        status = self.final_status
        table = Table(box=None, padding=(0, 2), show_header=False)
        table.add_column(style="bold")
        table.add_column()
        initial = sum(self.initial_rows.values())
        if self.args.snapshot == "never":
            table.add_row(
                "initial snapshot",
                f"skipped (--snapshot never); {initial:,} rows existed before the pipeline started",
            )
        elif self.snapshot_rows is not None:
            took = ""
            if times.pipeline_started is not None and times.snapshot_done is not None:
                took = f" (done within {times.snapshot_done - times.pipeline_started:.1f}s)"
            table.add_row(
                "initial snapshot",
                f"{self.snapshot_rows:,} rows copied{took}; {initial:,} rows existed when the "
                "pipeline started",
            )
        else:
            table.add_row(
                "initial snapshot",
                f"not reported by this Replicator build; {initial:,} rows existed before the "
                "pipeline started",
            )
        stats = self.traffic.stats if self.traffic else None
        if stats is not None:
            table.add_row(
                "live traffic",
                f"{stats.transactions:,} transactions in {stats.elapsed():.1f}s "
                f"({stats.transactions / max(stats.elapsed(), 1e-9):,.0f} tx/s), "
                f"{stats.rows_changed:,} rows changed",
            )
        inserted = status.number("rows_inserted")
        updated = status.number("rows_updated")
        deleted = status.number("rows_deleted")
        streamed = sum(v for v in (inserted, updated, deleted) if v is not None)
        rate = ""
        if stats is not None and stats.started is not None and times.caught_up is not None:
            seconds = max(times.caught_up - stats.started, 1e-9)
            rate = f" ({streamed / seconds:,.0f} rows/s while the shop ran)"
        table.add_row(
            "changes streamed",
            f"{_count(inserted)} inserted, {_count(updated)} updated, {_count(deleted)} deleted "
            f"rows in {_count(status.number('transactions'))} transactions{rate}",
        )
        if times.caught_up is not None and times.traffic_finished is not None:
            table.add_row(
                "catch-up",
                f"{_seconds(times.caught_up - times.traffic_finished)} after the last change; "
                f"lag then: {_bytes(self.final_lag)}",
            )
        good = sum(c.ok for c in self.comparisons)
        table.add_row(
            "verification",
            Text(
                f"{good} of {len(self.comparisons)} tables identical",
                style="green" if self.succeeded else "red",
            ),
        )
        self.console.print(table)
        self.console.print()
        if self.succeeded:
            self.console.print(
                "[bold green]✓ The target is an exact copy of the source.[/bold green]"
            )
            return
        self.console.print("[bold red]✗ The target is NOT an exact copy of the source.[/bold red]")
        missing = any(c.missing_count for c in self.comparisons)
        if missing and self.args.snapshot == "never":
            self.console.print(
                "  Expected with --snapshot never: the rows that existed before the pipeline "
                "started were not copied, only the changes made afterwards."
            )
        elif missing and not self.snapshot_rows:
            self.console.print(
                "  This Replicator build did not report an initial snapshot, so rows that "
                "existed before the pipeline started were probably never copied."
            )

    # -- watching ----------------------------------------------------------------------------

    def check_pipeline(self) -> None:
        """Fail with the end of the log when ``replicator run`` has exited."""
        assert self.replicator is not None
        code = self.replicator.exit_code
        if code is not None:
            raise DemoError(
                f"replicator run exited early with code {code}; last lines of its log "
                f"({self.replicator.log}):\n{self.replicator.log_tail()}"
            )

    def note_status(self) -> None:
        """Remember when the snapshot started and ended, and how many rows it copied."""
        assert self.replicator is not None
        status = self.replicator.status
        now = time.monotonic()
        if status.phase == "snapshotting" and self.times.snapshot_seen is None:
            self.times.snapshot_seen = now
        tables = status.snapshot
        if tables is not None:
            copied = [t.get("rows_copied") for t in tables]
            self.snapshot_rows = sum(int(c) for c in copied if isinstance(c, int | float))
        if status.snapshot_done and self.times.snapshot_done is None:
            self.times.snapshot_done = now

    def render(self, goal: int | None = None) -> RenderableType:
        """The live view: snapshot per table, traffic, pipeline position and counters."""
        assert self.replicator is not None and self.monitor is not None
        status = self.replicator.status
        return Group(
            self._render_snapshot(status),
            self._render_traffic(),
            self._render_pipeline(status, goal),
        )

    def status_line(self, goal: int | None = None) -> str:
        """One line with the state of everything, for output that is not a terminal."""
        assert self.replicator is not None and self.monitor is not None
        status = self.replicator.status
        parts = [f"phase {status.phase}"]
        tables = status.snapshot
        if tables:
            done = sum(t.get("state") == "done" for t in tables)
            parts.append(f"snapshot {done}/{len(tables)} tables done")
        if self.traffic is not None and self.traffic.running:
            stats = self.traffic.stats
            parts.append(f"traffic {stats.elapsed():.0f}s, {stats.transactions:,} transactions")
        slot = slot_state(self.monitor, SLOT)
        if slot.exists:
            parts.append(f"lag {_bytes(slot.lag_bytes)}")
            if goal is not None:
                parts.append(f"slot {format_lsn(slot.confirmed_flush)} of {format_lsn(goal)}")
        inserted, updated, deleted = (
            status.number(k) for k in ("rows_inserted", "rows_updated", "rows_deleted")
        )
        parts.append(f"applied +{_count(inserted)} ~{_count(updated)} -{_count(deleted)}")
        elapsed = time.monotonic() - self.started
        return f"{elapsed:6.1f}s  " + " | ".join(parts)

    def _render_snapshot(self, status: StatusView) -> RenderableType:
        tables = status.snapshot
        if not tables:
            if status.updated == 0:
                body: RenderableType = Text("waiting for the first status report…", "dim")
            elif tables is None:
                body = Text("this Replicator build reports no per-table snapshot progress", "dim")
            else:
                body = Text("no tables to copy yet", "dim")
            return Panel(body, title="initial snapshot", title_align="left")
        grid = Table(box=None, padding=(0, 1), expand=False)
        grid.add_column("table")
        grid.add_column("state")
        grid.add_column("progress", width=22)
        grid.add_column("rows copied", justify="right")
        for entry in tables:
            copied = entry.get("rows_copied")
            estimated = entry.get("rows_estimated")
            state = str(entry.get("state", "?"))
            done = isinstance(copied, int | float) and copied or 0
            total = isinstance(estimated, int | float) and estimated or 0
            if state == "done":
                total = max(total, done, 1)
                done = total
            bar = ProgressBar(
                total=max(total, done, 1),
                completed=done,
                width=20,
                complete_style="yellow",
                finished_style="green",
            )
            style = {"done": "green", "copying": "yellow"}.get(state, "dim")
            grid.add_row(
                str(entry.get("table", "?")),
                Text(state, style),
                bar,
                f"{_count(copied if isinstance(copied, int) else None)}"
                f" / ~{_count(estimated if isinstance(estimated, int) else None)}",
            )
        title = "initial snapshot" + (" — done" if status.snapshot_done else "")
        return Panel(grid, title=title, title_align="left")

    def _render_traffic(self) -> RenderableType:
        if self.traffic is None:
            return Text("")
        stats = self.traffic.stats
        elapsed = stats.elapsed()
        grid = Table(box=None, padding=(0, 1), show_header=False)
        grid.add_column()
        grid.add_column(justify="right")
        grid.add_column()
        grid.add_column(justify="right")
        names = list(ACTIONS)
        half = (len(names) + 1) // 2
        rights = names[half:] + [""] * (2 * half - len(names))
        for left, right in zip(names[:half], rights, strict=True):
            grid.add_row(
                ACTIONS[left][0],
                f"{stats.actions[left]:,}",
                ACTIONS[right][0] if right else "",
                f"{stats.actions[right]:,}" if right else "",
            )
        header = Table.grid(padding=(0, 1))
        header.add_row(
            ProgressBar(
                total=self.args.duration, completed=min(elapsed, self.args.duration), width=30
            ),
            Text(
                f"{elapsed:4.1f}s / {self.args.duration:g}s   {stats.transactions:,} transactions"
                f" ({stats.transactions / max(elapsed, 1e-9):,.0f}/s)"
            ),
        )
        return Panel(Group(header, grid), title="live shop traffic (source)", title_align="left")

    def _render_pipeline(self, status: StatusView, goal: int | None) -> RenderableType:
        assert self.monitor is not None
        slot = slot_state(self.monitor, SLOT)
        grid = Table(box=None, padding=(0, 1), show_header=False)
        grid.add_column(style="bold")
        grid.add_column()
        phase = {
            "unknown": "waiting for the first status report",
            "not started": "starting: checks, replication slot, target tables",
            "starting": "starting: checks, replication slot, target tables",
            "snapshotting": "snapshotting: copying the existing rows",
            "streaming": "streaming: applying changes as they are committed",
        }.get(status.phase, status.phase)
        grid.add_row("phase", phase)
        if slot.exists:
            lag = Text(_bytes(slot.lag_bytes), "green" if slot.lag_bytes < 65536 else "yellow")
            position = f"slot confirmed {format_lsn(slot.confirmed_flush)}"
            if goal is not None:
                position += f" (goal {format_lsn(goal)})"
            grid.add_row("lag", Text.assemble(lag, f"   {position}"))
        else:
            grid.add_row("lag", Text("replication slot not created yet", "dim"))
        grid.add_row(
            "applied",
            f"{_count(status.number('rows_inserted'))} inserted, "
            f"{_count(status.number('rows_updated'))} updated, "
            f"{_count(status.number('rows_deleted'))} deleted, "
            f"{_count(status.number('transactions'))} transactions",
        )
        if status.error is not None:
            grid.add_row("status", Text(f"replicator status: {status.error}", "dim"))
        return Panel(grid, title="Replicator (target)", title_align="left")

    # -- cleanup -----------------------------------------------------------------------------

    def cleanup(self) -> None:
        """Stop everything this run started and delete the clusters (always called)."""
        if self.traffic is not None:
            self.traffic.stop()
        if self.replicator is not None:
            self.replicator.stop_polling()
            if self.replicator.exit_code is None:
                self.replicator.terminate(timeout=30)
        if self.monitor is not None:
            with contextlib.suppress(Exception):
                self.monitor.close()
        for cluster in self.clusters:
            with contextlib.suppress(Exception):
                cluster.destroy()
        if self.clusters:
            self.say("removed both PostgreSQL servers")
        if self.succeeded and not self.args.keep_logs:
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            self.say(f"Replicator's config and log are kept in {self.workdir}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; 0 when the target ended up identical to the source."""
    args = parse_args(argv)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # clean up as on Ctrl-C: the clusters must not outlive us

    signal.signal(signal.SIGTERM, on_sigterm)
    console = Console(highlight=False)
    demo = Demo(args, console)
    try:
        return demo.run()
    except KeyboardInterrupt:
        console.print("\n[yellow]Interrupted; cleaning up.[/yellow]")
        return 130
    except (DemoError, PgClusterError) as exc:
        console.print()
        console.print(Text.assemble(("Demo failed: ", "bold red"), str(exc)))
        return 1
    finally:
        demo.cleanup()
