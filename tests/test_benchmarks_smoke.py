"""The benchmark suite in its smallest mode writes a whole report: every scenario, its charts
and the raw figures. No timed assertions: the figures are the report's business."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.scenarios import SCENARIOS

ROOT = Path(__file__).resolve().parent.parent
PNG = b"\x89PNG\r\n\x1a\n"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the sandboxes' cgroups need root"),
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed"),
]


def _sections(report: str) -> dict[str, str]:
    parts = re.split(r"^## \d+\. ", report, flags=re.MULTILINE)[1:]
    found = {}
    for part in parts:
        name = re.search(r"^Scenario `([a-z]+)`", part, flags=re.MULTILINE)
        assert name, part[:200]
        found[name.group(1)] = part
    return found


def test_a_quick_run_writes_every_scenario_with_its_charts_and_keeps_the_notes(
    tmp_path: Path,
) -> None:
    out = tmp_path / "docs"
    out.mkdir()
    (out / "benchmarks.md").write_text(
        "old\n<!-- scripts/bench rewrites everything above this "
        "line and keeps what follows -->\nMy profile notes.\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = (out / "benchmarks.md").read_text()
    assert report.rstrip().endswith("My profile notes.")
    for heading in ("## Summary", "## Machine", "## Reproduce", "scripts/bench --quick"):
        assert heading in report
    sections = _sections(report)
    assert sorted(sections) == sorted(SCENARIOS)
    for name, section in sections.items():
        assert "**Failed:**" not in section, section
        charts = re.findall(r"!\[[^]]*\]\(([^)]+\.png)\)", section)
        assert charts or "**Skipped:**" in section, f"{name} has neither charts nor a reason"
        for chart in charts:
            assert (out / chart).read_bytes().startswith(PNG), chart
    raw = json.loads((out / "benchmarks" / "results.json").read_text())
    assert sorted(raw["scenarios"]) == sorted(SCENARIOS)
    assert str(tmp_path) not in report
