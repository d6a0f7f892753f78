"""The benchmark report: generated above its marker, hand-written notes below it kept."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.report import KEEP_MARKER, write_report
from benchmarks.results import Headline, ScenarioResult, Table
from benchmarks.stats import percentile

MACHINE = [("CPU", "test CPU"), ("cores", "2")]


def _result() -> ScenarioResult:
    return ScenarioResult(
        "demo",
        "Demo scenario",
        method="interleaved",
        headlines=[Headline("demo ratio", "0.50x", "5/s vs 10/s", ">= 1.0x")],
        tables=[Table(["side", "median"], [["a|b", "1"]])],
        charts=["demo.png"],
    )


def test_the_report_keeps_what_follows_its_marker_and_rewrites_the_rest(tmp_path: Path) -> None:
    report = tmp_path / "benchmarks.md"
    report.write_text(f"stale figures\n{KEEP_MARKER}\n## Profile\npy-spy says storage.\n")
    write_report(report, tmp_path / "benchmarks", [_result()], MACHINE, "scripts/bench demo", 1.0)
    text = report.read_text()
    assert "stale figures" not in text
    assert text.endswith(f"{KEEP_MARKER}\n## Profile\npy-spy says storage.\n")
    assert "| demo | demo ratio | 0.50x | 5/s vs 10/s | >= 1.0x |" in text
    assert "| a\\|b | 1 |" in text
    assert "![demo](benchmarks/demo.png)" in text
    assert "| CPU | test CPU |" in text


def test_a_skipped_scenario_says_why_in_the_summary_and_the_raw_figures(tmp_path: Path) -> None:
    skipped = ScenarioResult("docker", "Docker", skipped="no engine")
    write_report(tmp_path / "b.md", tmp_path / "b", [skipped], MACHINE, "scripts/bench", 0.1)
    assert "| docker | skipped | no engine |" in (tmp_path / "b.md").read_text()
    raw = json.loads((tmp_path / "b" / "results.json").read_text())
    assert raw["scenarios"]["docker"]["skipped"] == "no engine"


def test_percentiles_interpolate_between_ranks() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([5.0], 99) == 5.0
    assert percentile(list(map(float, range(101))), 99) == 99.0
