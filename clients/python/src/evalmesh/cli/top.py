"""``top``: a live view of queue depth per priority, executor slots and recent evaluations."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import select
import sys
import termios
import tty
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import click
from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from evalmesh.cli.app import App, pass_app
from evalmesh.cli.options import DURATION, json_option
from evalmesh.cli.render import evaluation_table
from evalmesh.client import (
    Client,
    EvalmeshError,
    Evaluation,
    Executor,
    PermissionDeniedError,
    QueueStats,
    format_seconds,
)

__all__ = ["top"]

RECENT = 10


@dataclasses.dataclass
class Frame:
    """What one refresh of ``top`` fetched; admin-only parts hold the error when refused."""

    address: str
    stats: QueueStats | None
    executors: list[Executor]
    recent: list[Evaluation]
    problem: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of ``top --json``."""
        stats = self.stats
        return {
            "queue": [{"priority": q.priority.value, "depth": q.depth} for q in stats.priorities]
            if stats
            else None,
            "running": stats.running if stats else None,
            "completed_per_minute": stats.completed_per_minute if stats else None,
            "executors": [
                {"id": e.id, "slots": e.slots, "busy_slots": e.busy_slots, "healthy": e.healthy}
                for e in self.executors
            ],
            "recent": [item.to_dict() for item in self.recent],
            "problem": self.problem,
        }


def fetch(client: Client, tolerant: bool = False) -> Frame:
    """One snapshot of the cluster; a non-admin key still sees its own recent evaluations.

    ``tolerant`` turns any failure into a message on screen, so a live view rides out a restart.
    """
    try:
        recent = list(_take(client.list(page_size=RECENT), RECENT))
        try:
            return Frame(client.address, client.queue_stats(), client.executors(), recent)
        except PermissionDeniedError:
            problem = "the queue and executors need an admin API key"
            return Frame(client.address, None, [], recent, problem)
    except EvalmeshError as error:
        if not tolerant:
            raise
        return Frame(client.address, None, [], [], f"cannot reach the mesh: {error}")


def _take(items: Iterator[Evaluation], count: int) -> Iterator[Evaluation]:
    for index, item in enumerate(items):
        if index >= count:
            return
        yield item


def render(frame: Frame) -> RenderableType:
    """The screen for ``frame``."""
    now = datetime.now().strftime("%H:%M:%S")
    header = Text(f"evalmesh top  {frame.address}  {now}   (q to quit)", style="bold")
    parts: list[RenderableType] = [header, Text("")]
    if frame.stats is not None:
        parts += [_queue_table(frame.stats), _throughput(frame.stats), Text("")]
        parts.append(_executor_table(frame.executors))
    else:
        parts.append(Text(frame.problem, style="yellow"))
    parts += [Text(""), evaluation_table(frame.recent, title="recent evaluations")]
    return Group(*parts)


def _queue_table(stats: QueueStats) -> Table:
    table = Table(
        title="queue", header_style="bold", box=None, pad_edge=False, title_justify="left"
    )
    for column in ("PRIORITY", "DEPTH", "OLDEST WAIT"):
        table.add_column(column)
    for queue in stats.priorities:
        wait = format_seconds(queue.oldest_wait.total_seconds()) if queue.oldest_wait else "-"
        table.add_row(queue.priority.value.lower(), str(queue.depth), wait)
    return table


def _throughput(stats: QueueStats) -> Text:
    return Text(
        f"running {stats.running}   completed/min {stats.completed_per_minute:.1f}   "
        f"dead letters {stats.dead_letters}"
    )


def _executor_table(executors: list[Executor]) -> Table:
    table = Table(title="executors", header_style="bold", box=None, pad_edge=False)
    table.title_justify = "left"
    for column in ("ID", "HOST", "BACKEND", "SLOTS", "HEALTHY", "DONE"):
        table.add_column(column)
    for item in executors:
        healthy = "yes" if item.healthy else f"no: {item.unhealthy_reason}"
        slots = f"{item.busy_slots}/{item.slots}"
        table.add_row(item.id, item.host, item.backend, slots, healthy, str(item.completed))
    if not executors:
        table.add_row("(none)", "", "", "", "", "")
    return table


@contextlib.contextmanager
def _keys() -> Iterator[bool]:
    """Read single keys from a terminal's stdin; yields False when stdin is not a terminal."""
    if not sys.stdin.isatty():
        yield False
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _quit_pressed(interactive: bool, timeout: float) -> bool:
    if not interactive:
        select.select([], [], [], timeout)
        return False
    ready, _, _ = select.select([sys.stdin], [], [], timeout)
    return bool(ready) and os.read(sys.stdin.fileno(), 1) in (b"q", b"Q")


@click.command()
@click.option(
    "--interval", type=DURATION, default=1.0, show_default=True, help="Refresh period, e.g. 2s."
)
@click.option("--once", is_flag=True, help="Print one snapshot and exit.")
@json_option
@pass_app
def top(app: App, interval: float, once: bool, as_json: bool) -> None:
    """A live view of queue depth per priority, executor slots and recent evaluations.

    Needs an admin key for the queue and executors. Press q (or Ctrl-C) to quit.
    """
    client = app.client()
    if app.json(as_json):
        app.print_json(fetch(client).to_dict())
        return
    if once:
        app.out.print(render(fetch(client)))
        return
    with _keys() as interactive, Live(console=app.out, screen=True, auto_refresh=False) as live:
        while True:
            live.update(render(fetch(client, tolerant=True)), refresh=True)
            if _quit_pressed(interactive, max(0.1, interval)):
                return
