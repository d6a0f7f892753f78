"""Parameter types and option groups shared by the commands."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import click

from evalmesh.client import Priority, State, parse_duration, parse_size

__all__ = [
    "DURATION",
    "LABEL",
    "SIZE",
    "TIME",
    "json_option",
    "labels_of",
    "raw_option",
    "spec_options",
]

F = TypeVar("F", bound=Callable[..., Any])


class _Duration(click.ParamType[float]):
    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, float):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as error:
            self.fail(str(error), param, ctx)


class _Size(click.ParamType[int]):
    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_size(str(value))
        except ValueError as error:
            self.fail(str(error), param, ctx)


class _Label(click.ParamType[tuple[str, str]]):
    name = "key=value"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, str]:
        if isinstance(value, tuple):
            return value
        key, sep, text = str(value).partition("=")
        if not sep or not key:
            self.fail(f"{value!r} is not key=value", param, ctx)
        return key, text


class _Time(click.ParamType[datetime]):
    """A moment: an ISO 8601 time, or a duration meaning that long ago (``1h``)."""

    name = "time"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        text = str(value)
        try:
            return datetime.now(UTC) - timedelta(seconds=parse_duration(text))
        except ValueError:
            pass
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            self.fail(f"{text!r} is neither a duration ago (1h) nor an ISO time", param, ctx)
        return moment if moment.tzinfo else moment.astimezone()


DURATION = _Duration()
SIZE = _Size()
LABEL = _Label()
TIME = _Time()

PRIORITIES = click.Choice([p.value.lower() for p in Priority if p is not Priority.UNSPECIFIED])
STATES = click.Choice(
    [s.value.lower() for s in State if s is not State.UNSPECIFIED], case_sensitive=False
)


def labels_of(pairs: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """The label dict of repeated ``--label key=value`` options."""
    return dict(pairs)


def json_option(function: F) -> F:
    """``--json``: print machine-readable JSON instead of text."""
    option = click.option(
        "--json", "as_json", is_flag=True, help="Print JSON for scripts instead of text."
    )
    return option(function)


def raw_option(function: F) -> F:
    """``--raw``: a program's exact output bytes, even on a terminal."""
    option = click.option(
        "--raw",
        is_flag=True,
        help="Write the program's exact bytes even to a terminal (default there: control, bidi "
        "and invisible characters shown as escapes).",
    )
    return option(function)


def spec_options(function: F) -> F:
    """The flags that shape an evaluation: limits, priority, runtime, labels, request id."""
    options = [
        click.option(
            "--timeout", type=DURATION, help="Wall-clock limit, e.g. 10s, 2m (1s to 900s)."
        ),
        click.option(
            "--memory", type=SIZE, help="Memory limit, e.g. 256M, 1G (16M to 4G; K/M/G = 1024^n)."
        ),
        click.option("--max-processes", type=click.IntRange(min=1), help="Process/thread limit."),
        click.option("--max-output", type=SIZE, help="Cap on stdout and on stderr, e.g. 1M."),
        click.option(
            "--priority", type=PRIORITIES, help="Scheduling class (default normal).", default=None
        ),
        click.option("--runtime", help="Runtime: python (default) or python-ml."),
        click.option(
            "--label",
            "labels",
            type=LABEL,
            multiple=True,
            help="A key=value label for filtering; repeatable.",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function
