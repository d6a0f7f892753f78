"""The Prometheus rules in services/prometheus/rules: valid for promtool, their alerts fire in the
situations their unit tests describe, and every evalmesh metric they read is one the real
services serve (a rule over a misspelt metric would never fire, and nothing would say so)."""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

from evalmesh_deploy.local.mesh import MeshEndpoints
from tests.conftest import ROOT

RULES = ROOT / "services" / "prometheus" / "rules"
RULE_FILES = sorted(RULES.glob("*.rules.yml"))
_METRIC = re.compile(r"\b(?:evalmesh|grpc_server)_[a-z0-9_]+")
_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed: scripts/setup installs Debian's prometheus as root")
    return found


def _run(argv: list[str], cwd: Path) -> str:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(argv)} failed:\n{output}"
    return output


def test_the_rule_files_pass_promtool_check_rules() -> None:
    assert RULE_FILES, "no rule files found"
    output = _run([_promtool(), "check", "rules", *map(str, RULE_FILES)], RULES)
    assert output.count("SUCCESS") == len(RULE_FILES)


def test_each_alert_fires_in_its_situation_and_not_in_its_look_alike() -> None:
    tests = sorted((RULES / "tests").glob("*.test.yml"))
    assert tests
    _run([_promtool(), "test", "rules", *map(str, tests)], RULES / "tests")


def _family(name: str) -> str:
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def _served(url: str) -> set[str]:
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    names = set()
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            names.add(_family(line.split()[2]))
        elif line and not line.startswith("#"):
            names.add(_family(re.split(r"[{ ]", line, maxsplit=1)[0]))
    return names


def _expressions(path: Path) -> list[str]:
    document = yaml.safe_load(path.read_text())
    return [rule["expr"] for group in document["groups"] for rule in group["rules"]]


def test_every_metric_the_rules_read_is_served_by_the_mesh(mesh: MeshEndpoints) -> None:
    wanted = {
        _family(name)
        for path in RULE_FILES
        for expression in _expressions(path)
        for name in _METRIC.findall(expression)
    }
    served: set[str] = set()
    for name, url in mesh.metrics.items():
        if name != "envoy":
            served |= _served(url)
    assert sorted(wanted - served) == []
