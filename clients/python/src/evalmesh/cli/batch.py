"""``batch``: submit many files at once, follow them with progress bars, summarise the outcome."""

from __future__ import annotations

import glob
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from evalmesh.cli.app import App, pass_app
from evalmesh.cli.evaluations import spec_kwargs
from evalmesh.cli.options import json_option, spec_options
from evalmesh.cli.render import STATE_STYLES, outcome
from evalmesh.client import BatchProgress, Client, Evaluation, Spec, State, format_seconds

__all__ = ["batch"]

BATCH_LABEL = "evalmesh/batch"
POLL_SECONDS = 0.5


def collect_files(patterns: tuple[str, ...]) -> list[Path]:
    """The ``.py`` files of each directory, or the files each glob pattern matches, in order."""
    files: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            files += sorted(item for item in path.iterdir() if item.suffix == ".py")
        else:
            files += sorted(Path(match) for match in glob.glob(pattern, recursive=True))
    unique = list(dict.fromkeys(item for item in files if item.is_file()))
    if not unique:
        raise click.BadParameter(f"no files match {' '.join(patterns)}", param_hint="DIR|GLOB")
    return unique


@click.command()
@click.argument("patterns", nargs=-1, required=True, metavar="DIR|GLOB...")
@spec_options
@click.option("--concurrency", type=click.IntRange(1, 32), default=4, show_default=True)
@click.option("--no-wait", is_flag=True, help="Only submit; do not wait for the results.")
@json_option
@pass_app
def batch(
    app: App,
    /,
    patterns: tuple[str, ...],
    concurrency: int,
    no_wait: bool,
    as_json: bool,
    **options: Any,
) -> None:
    """Run every .py file of DIR (or matching GLOB) as one batch, with progress and a summary.

    Exits 0 when every evaluation succeeded, 1 otherwise.
    """
    files = collect_files(patterns)
    batch_id = uuid.uuid4().hex[:16]
    kwargs = spec_kwargs(options)
    kwargs["labels"] = {**kwargs["labels"], BATCH_LABEL: batch_id}
    specs = [Spec(code=file.read_text(), **kwargs) for file in files]
    client = app.client()
    json_mode = app.json(as_json)
    with _progress(app, json_mode) as progress:
        submitted = progress.add_task("submitted", total=len(specs))

        def advance(step: BatchProgress) -> None:
            progress.update(submitted, completed=step.submitted)

        created = client.submit_batch(specs, concurrency=concurrency, on_progress=advance)
        final = created if no_wait else _wait_all(client, batch_id, created, progress)
    _report(app, json_mode, batch_id, files, final)
    raise SystemExit(0 if all(item.succeeded for item in final) or no_wait else 1)


def _progress(app: App, quiet: bool) -> Progress:
    return Progress(
        TextColumn("{task.description:>9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=app.err,
        disable=quiet,
    )


def _wait_all(
    client: Client, batch_id: str, created: list[Evaluation], progress: Progress
) -> list[Evaluation]:
    finished = progress.add_task("finished", total=len(created))
    latest = {item.id: item for item in created}
    while True:
        for item in client.list(labels={BATCH_LABEL: batch_id}, page_size=500):
            if item.id in latest:
                latest[item.id] = item
        done = sum(1 for item in latest.values() if item.terminal)
        progress.update(finished, completed=done)
        if done == len(latest):
            return [latest[item.id] for item in created]
        time.sleep(POLL_SECONDS)


def _report(
    app: App, json_mode: bool, batch_id: str, files: list[Path], final: list[Evaluation]
) -> None:
    counts = Counter(item.state for item in final)
    if json_mode:
        app.print_json(
            {
                "batch": batch_id,
                "counts": {state.value: count for state, count in counts.items()},
                "evaluations": [
                    {"file": str(file), **item.to_dict()}
                    for file, item in zip(files, final, strict=True)
                ],
            }
        )
        return
    table = Table(
        title=f"batch {batch_id}",
        header_style="bold",
        box=None,
        pad_edge=False,
        title_justify="left",
    )
    # Long paths fold onto more lines; ids and states are never cut short.
    table.add_column("FILE", overflow="fold")
    table.add_column("ID", no_wrap=True, min_width=max((len(item.id) for item in final), default=2))
    table.add_column("STATE", no_wrap=True, min_width=len("OUTPUT_LIMIT_EXCEEDED"))
    for column in ("EXIT", "TIME"):
        table.add_column(column, no_wrap=True)
    for file, item in zip(files, final, strict=True):
        seconds = item.wall_time.total_seconds() if item.wall_time else None
        table.add_row(
            str(file),
            item.id,
            f"[{STATE_STYLES.get(item.state, '')}]{item.state.value}[/]",
            outcome(item),
            format_seconds(seconds) if seconds is not None else "-",
        )
    app.out.print(table)
    summary = ", ".join(f"{count} {state.value}" for state, count in counts.most_common())
    app.out.print(f"{len(final)} evaluations: {summary}", markup=False)
    if State.QUEUED in counts or State.RUNNING in counts:
        app.out.print(f"follow them with: evalmesh ls --label {BATCH_LABEL}={batch_id}")
