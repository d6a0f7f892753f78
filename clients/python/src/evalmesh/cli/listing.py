"""``ls``: list evaluations with filters, as a table or JSON."""

from __future__ import annotations

import itertools
from datetime import datetime

import click

from evalmesh.cli.app import App, pass_app
from evalmesh.cli.options import LABEL, PRIORITIES, STATES, TIME, json_option, labels_of
from evalmesh.cli.render import evaluation_table

__all__ = ["ls"]


@click.command()
@click.option("--state", "states", type=STATES, multiple=True, help="Keep this state; repeatable.")
@click.option(
    "--priority", "priorities", type=PRIORITIES, multiple=True, help="Keep this priority."
)
@click.option("--label", "labels", type=LABEL, multiple=True, help="Keep key=value; repeatable.")
@click.option("--since", type=TIME, help="Created at or after: an ISO time or a duration ago (1h).")
@click.option("--until", type=TIME, help="Created before: an ISO time or a duration ago.")
@click.option(
    "-n",
    "--limit",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="Show at most this many (0: all).",
)
@json_option
@pass_app
def ls(
    app: App,
    states: tuple[str, ...],
    priorities: tuple[str, ...],
    labels: tuple[tuple[str, str], ...],
    since: datetime | None,
    until: datetime | None,
    limit: int,
    as_json: bool,
) -> None:
    """List your evaluations, newest first."""
    found = app.client().list(
        state=states,
        priority=priorities,
        labels=labels_of(labels),
        created_after=since,
        created_before=until,
        page_size=min(limit, 500) if limit else 500,
    )
    evaluations = list(itertools.islice(found, limit) if limit else found)
    if app.json(as_json):
        app.print_json([item.to_dict() for item in evaluations])
    elif not evaluations:
        app.note("no evaluations match")
    else:
        app.out.print(evaluation_table(evaluations))
