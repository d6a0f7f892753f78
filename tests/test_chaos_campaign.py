"""The quick chaos campaign end to end, as CI runs it: every fault once against a real local
mesh, nothing lost, duplicated, phantom, wrong, stuck or orphaned, and the negative control
seen by the checker. About two minutes on two cores."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from chaos.plan import FAULTS
from chaos.report import KEEP_MARKER

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def test_the_quick_campaign_survives_every_fault_and_its_checker_sees_the_planted_loss(
    tmp_path: Path,
) -> None:
    figures = tmp_path / "chaos.json"
    done = subprocess.run(
        [sys.executable, "-m", "chaos", "--quick", "--out", str(tmp_path), "--json", str(figures)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert figures.is_file(), done.stderr[-4000:]
    result = json.loads(figures.read_text())
    findings = "\n".join(f"{f['category']}: {f['rid']} {f['detail']}" for f in result["findings"])
    assert result["counts"] == dict.fromkeys(result["counts"], 0), findings
    assert result["control"]["passed"], result["control"]
    assert result["control"]["lost"] == [result["control"]["deleted"]]
    assert len(result["control"]["phantom"]) == 1
    assert [fault["name"] for fault in result["faults"]] == list(FAULTS)
    for fault in result["faults"]:
        assert fault["recovered_after"] is not None, fault
    assert result["accepted"] == result["submitted"] == result["succeeded"]
    assert done.returncode == 0, done.stderr[-4000:]
    report = (tmp_path / "reliability.md").read_text()
    assert "## Time to recover" in report
    assert KEEP_MARKER in report
