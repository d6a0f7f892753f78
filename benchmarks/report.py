"""Write docs/benchmarks.md (and results.json beside the charts) from the scenarios' results.

The file is generated down to a marker line; whatever follows the marker (profiling notes,
analysis written by hand) is kept when the report is written again.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.results import ScenarioResult, Table

__all__ = ["KEEP_MARKER", "write_report"]

KEEP_MARKER = "<!-- scripts/bench rewrites everything above this line and keeps what follows -->"

_DEFAULT_NOTES = """
## Notes kept between runs

Profiles and analysis written by hand go here; `scripts/bench` keeps this part.
"""


def write_report(
    path: Path,
    charts_dir: Path,
    results: Sequence[ScenarioResult],
    machine: Sequence[tuple[str, str]],
    command: str,
    minutes: float,
) -> None:
    """Write the Markdown report to ``path`` and the raw figures to charts_dir/results.json."""
    kept = _kept_part(path)
    charts_rel = Path(_relative(charts_dir, path.parent))
    parts = [
        _header(command, minutes),
        _summary(results),
        _machine(machine),
        _reproduce(command),
        *(_section(number, result, charts_rel) for number, result in enumerate(results, 1)),
        KEEP_MARKER + "\n" + kept,
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts))
    charts_dir.mkdir(parents=True, exist_ok=True)
    raw = {
        "command": command,
        "machine": dict(machine),
        "scenarios": {r.name: _jsonable(dataclasses.asdict(r)) for r in results},
    }
    (charts_dir / "results.json").write_text(json.dumps(raw, indent=1, sort_keys=True) + "\n")


def _kept_part(path: Path) -> str:
    if path.is_file():
        text = path.read_text()
        if KEEP_MARKER in text:
            return text.split(KEEP_MARKER, 1)[1].lstrip("\n")
    return _DEFAULT_NOTES.lstrip("\n")


def _header(command: str, minutes: float) -> str:
    return (
        "# Benchmarks\n\n"
        f"Written by `{command}` in {minutes:.1f} minutes. Every ratio and median below was "
        "measured in that one run, with the reference beside it (the raw bwrap floor, the "
        "sandbox library alone, an empty database, a single watcher), in interleaved rounds; "
        "absolute figures are shown only next to the ratio they belong to, since they depend "
        "on the machine. The targets are issue 13's.\n"
    )


def _summary(results: Sequence[ScenarioResult]) -> str:
    rows = []
    for result in results:
        if result.skipped or result.failed:
            state = "skipped" if result.skipped else "FAILED"
            rows.append([result.name, state, result.skipped or result.failed, "", ""])
        for line in result.headlines:
            rows.append([result.name, line.measure, line.result, line.reference, line.target])
    columns = ["scenario", "measure", "result", "beside it (same run)", "target"]
    return "## Summary\n\n" + _table(Table(columns, rows))


def _machine(machine: Sequence[tuple[str, str]]) -> str:
    return "## Machine\n\n" + _table(Table(["", ""], [[k, v] for k, v in machine]))


def _reproduce(command: str) -> str:
    return (
        "## Reproduce\n\n"
        "```\n"
        "scripts/bench                        # every scenario, full size (as above)\n"
        "scripts/bench --quick                # every scenario, smoke size (a few minutes)\n"
        "scripts/bench throughput latency     # chosen scenarios only\n"
        "scripts/bench --list                 # the scenario names\n"
        "```\n\n"
        f"This report: `{command}`. `scripts/bench` runs `scripts/setup` first; it needs root "
        "for the sandboxes' cgroups, as the executor does. See benchmarks/README.md.\n"
    )


def _section(number: int, result: ScenarioResult, charts: Path) -> str:
    lines = [f"## {number}. {result.title}", "", f"Scenario `{result.name}`", ""]
    if result.skipped:
        lines += [f"**Skipped:** {result.skipped}", ""]
    if result.failed:
        lines += [f"**Failed:** {result.failed}", ""]
    if result.method:
        lines += [f"Method: {result.method}", ""]
    for table in result.tables:
        if table.caption:
            lines += [table.caption, ""]
        lines.append(_table(table))
    for chart in result.charts:
        lines += [f"![{result.name}]({(charts / chart).as_posix()})", ""]
    lines += [f"- {note}" for note in result.notes]
    if result.notes:
        lines.append("")
    return "\n".join(lines)


def _table(table: Table) -> str:
    def row(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    lines = [row(table.columns), "|" + "---|" * len(table.columns)]
    lines += [row(cells) for cells in table.rows]
    return "\n".join(lines) + "\n"


def _relative(target: Path, start: Path) -> str:
    try:
        return target.resolve().relative_to(start.resolve()).as_posix()
    except ValueError:
        return target.name


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
