"""Every ```console and ```python example in the READMEs runs against the real mesh as shown.

A console block is a shell session: each ``$ command`` runs in one bash process per block (so
variables and files carry over), with stderr merged into stdout as a terminal shows it, and its
output must match the lines under it, where ``...`` stands for any text. A python block runs as a
script and must exit 0 (the examples assert what they claim). Blocks fenced as plain ``` or
another language (``toml``, ``sh``) are documentation only and are not run.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from client_mesh import Mesh

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
READMES = [ROOT / "README.md", ROOT / "clients" / "python" / "README.md"]
_FENCE = re.compile(r"^```(console|python)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_MARKER = "@@evalmesh-readme-command {}@@"


@dataclasses.dataclass(frozen=True)
class Example:
    """One fenced block of a README."""

    path: Path
    line: int
    kind: str
    text: str

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def examples() -> list[Example]:
    """Every runnable block of the READMEs, in order."""
    found = []
    for path in READMES:
        text = path.read_text()
        for match in _FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append(Example(path, line, match.group(1), match.group(2)))
    return found


def session(text: str) -> list[tuple[str, str]]:
    """The (command, expected output) pairs of a console block."""
    pairs: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("$ "):
            pairs.append((line[2:], []))
        elif pairs:
            pairs[-1][1].append(line)
    return [(command, "\n".join(lines)) for command, lines in pairs]


def normalized(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines()).strip("\n")


def matches(expected: str, actual: str) -> bool:
    pattern = ".*?".join(re.escape(part) for part in normalized(expected).split("..."))
    return re.fullmatch(pattern, normalized(actual), re.DOTALL) is not None


def environment(mesh: Mesh, home: Path) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "EVALMESH_ADDRESS": mesh.address,
        "EVALMESH_API_KEY": mesh.admin_key,
        "NO_COLOR": "1",
        "COLUMNS": "200",
    }


def test_the_readmes_have_runnable_examples() -> None:
    kinds = {(example.path.name, example.kind) for example in examples()}
    assert ("README.md", "console") in kinds
    assert ("README.md", "python") in kinds
    assert len([e for e in examples() if e.path == READMES[1]]) >= 8


@pytest.mark.parametrize("example", examples(), ids=lambda example: example.name)
def test_readme_example_runs_as_shown(example: Example, mesh: Mesh, tmp_path: Path) -> None:
    env = environment(mesh, tmp_path)
    if example.kind == "python":
        script = tmp_path / "example.py"
        script.write_text(example.text)
        result = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert result.returncode == 0, f"{example.name}\n{result.stdout}\n{result.stderr}"
        return
    steps = session(example.text)
    lines = ["exec 2>&1"]
    for index, (command, _) in enumerate(steps):
        lines += [f"printf '\\n%s\\n' '{_MARKER.format(index)}'", command]
    result = subprocess.run(
        ["bash", "-c", "\n".join(lines)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    outputs = re.split(r"\n?@@evalmesh-readme-command \d+@@\n", result.stdout)[1:]
    assert len(outputs) == len(steps), result.stdout
    for (command, expected), actual in zip(steps, outputs, strict=True):
        assert matches(expected, actual), (
            f"{example.name}: $ {command}\nexpected:\n{expected}\ngot:\n{actual}"
        )
