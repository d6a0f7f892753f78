"""The operators' commands (admin key): ``deadletters ls|show|redrive``, ``executors ls|drain``
and ``purge``."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable

import click
from rich.table import Table

from evalmesh.cli.app import App, pass_app
from evalmesh.cli.options import json_option
from evalmesh.cli.render import when
from evalmesh.client import DeadLetter, Executor, format_seconds, parse_duration

__all__ = ["deadletters", "executors", "purge"]

_DRAIN_POLL = 0.5


def _table(*columns: str) -> Table:
    table = Table(header_style="bold", box=None, pad_edge=False)
    for column in columns:
        table.add_column(column, no_wrap=column != "REASON")
    return table


def _letter_dict(letter: DeadLetter) -> dict[str, object]:
    data: dict[str, object] = {
        "sequence": letter.sequence,
        "evaluation_id": letter.evaluation_id,
        "tenant": letter.tenant,
        "priority": letter.priority.value,
        "deliveries": letter.deliveries,
        "reason": letter.reason,
        "dead_time": when(letter.dead_time),
    }
    if letter.evaluation is not None:
        data["evaluation"] = letter.evaluation.to_dict()
    return data


def _duration_type(value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


@click.group()
def deadletters() -> None:
    """Jobs that exhausted their deliveries: list, inspect, redrive (admin key)."""


@deadletters.command("ls")
@click.option(
    "-n",
    "--limit",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="Show at most this many.",
)
@json_option
@pass_app
def list_letters(app: App, limit: int, as_json: bool) -> None:
    """List the dead letters, oldest first."""
    found = list(itertools.islice(app.client().dead_letters(), limit))
    if app.json(as_json):
        app.print_json([_letter_dict(letter) for letter in found])
        return
    if not found:
        app.note("no dead letters")
        return
    table = _table("SEQ", "EVALUATION", "TENANT", "PRIORITY", "DELIVERIES", "DEAD SINCE", "REASON")
    for letter in found:
        table.add_row(
            str(letter.sequence),
            letter.evaluation_id,
            letter.tenant,
            letter.priority.value.lower(),
            str(letter.deliveries),
            when(letter.dead_time),
            letter.reason,
        )
    app.out.print(table)


@deadletters.command("show")
@click.argument("sequence", type=click.IntRange(min=1))
@json_option
@pass_app
def show_letter(app: App, sequence: int, as_json: bool) -> None:
    """Show one dead letter (by its SEQ) and the evaluation it was for."""
    letter = app.client().dead_letter(sequence)
    if app.json(as_json):
        app.print_json(_letter_dict(letter))
        return
    rows = [
        ("sequence", str(letter.sequence)),
        ("evaluation", letter.evaluation_id),
        ("tenant", letter.tenant),
        ("priority", letter.priority.value.lower()),
        ("deliveries", str(letter.deliveries)),
        ("dead since", when(letter.dead_time)),
        ("reason", letter.reason),
    ]
    evaluation = letter.evaluation
    if evaluation is None:
        rows.append(("state", "(the evaluation was purged)"))
    else:
        rows += [("state", evaluation.state.value), ("runtime", evaluation.runtime or "-")]
        if evaluation.detail:
            rows.append(("detail", evaluation.detail))
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        click.echo(f"{key.ljust(width)}  {value}")


@deadletters.command("redrive")
@click.argument("sequences", nargs=-1, required=True, type=click.IntRange(min=1), metavar="SEQ...")
@json_option
@pass_app
def redrive_letters(app: App, sequences: tuple[int, ...], as_json: bool) -> None:
    """Queue each letter's evaluation again as a new one, and remove the letter."""
    redriven = [(seq, app.client().redrive_dead_letter(seq)) for seq in sequences]
    if app.json(as_json):
        app.print_json([{"sequence": seq, "evaluation": e.to_dict()} for seq, e in redriven])
        return
    for sequence, evaluation in redriven:
        click.echo(f"{sequence}  queued again as {evaluation.id}")


def _executor_dict(executor: Executor) -> dict[str, object]:
    return {
        "id": executor.id,
        "host": executor.host,
        "backend": executor.backend,
        "slots": executor.slots,
        "busy_slots": executor.busy_slots,
        "running_evaluation_ids": executor.running_evaluation_ids,
        "runtimes": executor.runtimes,
        "healthy": executor.healthy,
        "draining": executor.draining,
        "unhealthy_reason": executor.unhealthy_reason,
        "start_time": when(executor.start_time),
        "heartbeat_time": when(executor.heartbeat_time),
        "completed": executor.completed,
    }


def _status(executor: Executor) -> str:
    if executor.draining:
        return "draining"
    return "healthy" if executor.healthy else f"unhealthy: {executor.unhealthy_reason}"


def _executor_table(found: Iterable[Executor]) -> Table:
    table = _table("ID", "HOST", "BACKEND", "BUSY", "RUNTIMES", "COMPLETED", "STATUS", "SINCE")
    for executor in found:
        table.add_row(
            executor.id,
            executor.host,
            executor.backend,
            f"{executor.busy_slots}/{executor.slots}",
            ",".join(executor.runtimes),
            str(executor.completed),
            _status(executor),
            when(executor.start_time),
        )
    return table


@click.group()
def executors() -> None:
    """The executor pool: list instances, drain one (admin key)."""


@executors.command("ls")
@json_option
@pass_app
def list_executors(app: App, as_json: bool) -> None:
    """List the live executor instances with their slots and health."""
    found = app.client().executors()
    if app.json(as_json):
        app.print_json([_executor_dict(executor) for executor in found])
    elif not found:
        app.note("no live executors")
    else:
        app.out.print(_executor_table(found))


@executors.command("drain")
@click.argument("executor_id", metavar="ID")
@click.option(
    "--grace",
    type=_duration_type,
    default=None,
    metavar="DURATION",
    help="Time running evaluations get to finish before they go back to the queue "
    "(default: the executor's own setting; at most 1h).",
)
@click.option("--wait", is_flag=True, help="Wait until no evaluation runs on it any more.")
@json_option
@pass_app
def drain_executor(
    app: App, executor_id: str, grace: float | None, wait: bool, as_json: bool
) -> None:
    """Make executor ID stop taking work. It stays drained until it is restarted."""
    client = app.client()
    drained = client.drain_executor(executor_id, grace=grace)
    if wait:
        drained = _wait_drained(app, drained)
    if app.json(as_json):
        app.print_json(_executor_dict(drained))
        return
    running = drained.busy_slots
    app.note(
        f"{drained.id} is draining; "
        + (f"{running} evaluations still running" if running else "nothing runs on it")
    )


def _wait_drained(app: App, executor: Executor) -> Executor:
    """Poll the pool until the executor runs nothing (or is gone: it was stopped)."""
    started = time.monotonic()
    while executor.busy_slots:
        time.sleep(_DRAIN_POLL)
        current = [e for e in app.client().executors() if e.id == executor.id]
        if not current:
            break
        executor = current[0]
    app.note(f"drained in {format_seconds(time.monotonic() - started)}")
    return executor


@click.command()
@click.option(
    "--older-than",
    "older_than",
    type=_duration_type,
    required=True,
    metavar="DURATION",
    help="Delete terminal evaluations that ended more than this long ago, e.g. 30d or 12h.",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_app
def purge(app: App, older_than: float, yes: bool, as_json: bool) -> None:
    """Delete every tenant's terminal evaluations that ended more than DURATION ago, with their
    output. Queued and running evaluations are never deleted. (The scheduler also does this on
    a schedule: EVALMESH_RETENTION_AGE, 30 days by default.)"""
    if not yes:
        click.confirm(
            f"Delete every terminal evaluation that ended more than "
            f"{format_seconds(older_than)} ago, of every tenant?",
            abort=True,
            err=True,
        )
    result = app.client().purge_evaluations(older_than)
    cutoff = when(result.end_time_before)
    if app.json(as_json):
        app.print_json({"purged": result.purged, "end_time_before": cutoff})
        return
    click.echo(f"purged {result.purged} evaluations that ended before {cutoff}")
