"""Text rendering of evaluations and keys: tables for lists, key/value blocks for one item."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from rich.table import Table

from evalmesh.client import ApiKey, Evaluation, State, format_bytes, format_seconds

__all__ = ["STATE_STYLES", "details", "evaluation_table", "key_table", "outcome", "when"]

STATE_STYLES = {
    State.QUEUED: "cyan",
    State.RUNNING: "blue",
    State.SUCCEEDED: "green",
    State.FAILED: "red",
    State.TIMED_OUT: "yellow",
    State.MEMORY_LIMIT_EXCEEDED: "yellow",
    State.OUTPUT_LIMIT_EXCEEDED: "yellow",
    State.CANCELLED: "magenta",
    State.ERROR: "bold red",
}


def when(moment: datetime | None) -> str:
    """A local, second-precision time, or '-'."""
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def outcome(evaluation: Evaluation) -> str:
    """Exit status or signal, as short text."""
    if evaluation.signal:
        return f"signal {evaluation.signal}"
    return "-" if evaluation.exit_code is None else str(evaluation.exit_code)


def _duration(evaluation: Evaluation) -> str:
    if evaluation.wall_time is not None:
        return format_seconds(evaluation.wall_time.total_seconds())
    return "-"


def _labels(evaluation: Evaluation) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(evaluation.labels.items()))


def evaluation_table(evaluations: Iterable[Evaluation], title: str | None = None) -> Table:
    """One row per evaluation: id, state, priority, exit, runtime, created, duration, labels.

    Every column keeps its full width except LABELS, which is cut short on a narrow terminal.
    """
    table = Table(title=title, header_style="bold", box=None, pad_edge=False, title_justify="left")
    rows = [
        (
            item.id,
            item.state.value,
            item.priority.value.lower(),
            outcome(item),
            item.runtime,
            when(item.create_time),
            _duration(item),
            _labels(item),
        )
        for item in evaluations
    ]
    headers = ("ID", "STATE", "PRIORITY", "EXIT", "RUNTIME", "CREATED", "TIME")
    for index, header in enumerate(headers):
        width = max([len(header), *(len(row[index]) for row in rows)])
        table.add_column(header, no_wrap=True, min_width=width)
    table.add_column("LABELS", no_wrap=True, overflow="ellipsis")
    for row in rows:
        style = STATE_STYLES.get(State(row[1]), "")
        table.add_row(row[0], f"[{style}]{row[1]}[/]", *row[2:])
    return table


def details(evaluation: Evaluation) -> list[tuple[str, str]]:
    """The key/value lines of ``evalmesh status``."""
    rows = [
        ("id", evaluation.id),
        ("state", evaluation.state.value),
        ("priority", evaluation.priority.value.lower()),
        ("runtime", evaluation.runtime),
        ("created", when(evaluation.create_time)),
    ]
    if evaluation.queue_position is not None and evaluation.state is State.QUEUED:
        rows.append(("queue position", str(evaluation.queue_position)))
    if evaluation.start_time:
        rows.append(("started", when(evaluation.start_time)))
    if evaluation.terminal:
        rows += [
            ("ended", when(evaluation.end_time)),
            ("exit", outcome(evaluation)),
            ("cause", evaluation.cause.value.lower()),
            ("fault", evaluation.fault.value.lower()),
            ("time", _duration(evaluation)),
            ("stages", _stages(evaluation)),
            ("peak memory", format_bytes(evaluation.peak_memory_bytes)),
            ("stdout", _size(evaluation.stdout_bytes, evaluation.stdout_truncated)),
            ("stderr", _size(evaluation.stderr_bytes, evaluation.stderr_truncated)),
        ]
    if evaluation.detail:
        rows.append(("detail", evaluation.detail))
    if evaluation.labels:
        rows.append(("labels", _labels(evaluation)))
    if evaluation.cancel_requested and not evaluation.terminal:
        rows.append(("cancel", "requested"))
    return rows


def _stages(evaluation: Evaluation) -> str:
    """Where the time went, from the recorded moments (what the web UI's breakdown shows)."""
    stored, ended = evaluation.output_stored_time, evaluation.end_time
    moments = [
        ("queued", evaluation.create_time, evaluation.start_time),
        ("sandbox", evaluation.start_time, evaluation.run_start_time),
        ("running", evaluation.run_start_time, evaluation.run_end_time),
    ]
    if stored is not None and stored == ended:  # the last output was stored with the result
        moments.append(("output and result", evaluation.run_end_time, ended))
    else:
        moments += [("output", evaluation.run_end_time, stored), ("result", stored, ended)]
    parts = [
        f"{name} {format_seconds((end - start).total_seconds())}"
        for name, start, end in moments
        if start is not None and end is not None
    ]
    return ", ".join(parts) or "-"


def _size(count: int, truncated: bool) -> str:
    return format_bytes(count) + (" (truncated)" if truncated else "")


def key_table(keys: Iterable[ApiKey]) -> Table:
    """One row per API key."""
    table = Table(header_style="bold", box=None, pad_edge=False)
    for column in ("ID", "TENANT", "ROLE", "PREFIX", "NAME", "CREATED", "REVOKED"):
        table.add_column(column)
    for key in keys:
        table.add_row(
            key.id,
            key.tenant,
            key.role.value.lower(),
            key.prefix,
            key.name,
            when(key.create_time),
            when(key.revoke_time) if key.revoked else "",
        )
    return table
