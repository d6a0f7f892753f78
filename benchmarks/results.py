"""What a scenario hands back: headline figures, tables, charts and notes for the report."""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["Headline", "ScenarioResult", "Table"]


@dataclasses.dataclass(frozen=True)
class Headline:
    """Headline is one line of the summary table: a ratio or median, what it is compared
    with, and the issue's target for it."""

    measure: str
    result: str
    reference: str
    target: str = ""


@dataclasses.dataclass(frozen=True)
class Table:
    """Table is a Markdown table: a header row and rows of already formatted cells."""

    columns: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclasses.dataclass
class ScenarioResult:
    """ScenarioResult is everything one scenario reports; ``data`` goes to results.json."""

    name: str
    title: str
    method: str = ""
    headlines: list[Headline] = dataclasses.field(default_factory=list)
    tables: list[Table] = dataclasses.field(default_factory=list)
    charts: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    data: dict[str, Any] = dataclasses.field(default_factory=dict)
    skipped: str = ""
    failed: str = ""
    seconds: float = 0.0
