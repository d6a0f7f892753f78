"""The contracts in proto/ pass buf lint, and gen/ is exactly what scripts/gen makes of them."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
PYTHON_SRC = ROOT / "gen" / "python" / "src"
GENERATED_DIRS = ("gen/python/src", "gen/ts/src")
TOOLS_PATH = os.pathsep.join(
    [str(ROOT / ".venv" / "bin"), str(ROOT / "node_modules" / ".bin"), os.environ.get("PATH", "")]
)

pytestmark = pytest.mark.skipif(
    not any(PROTO.rglob("*.proto")), reason="no .proto files under proto/ yet"
)


def run(argv: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run a workspace tool with .venv/bin and node_modules/.bin first on PATH."""
    executable = shutil.which(argv[0], path=TOOLS_PATH)
    assert executable is not None, f"{argv[0]} is not installed: run scripts/setup"
    return subprocess.run(
        [executable, *argv[1:]],
        cwd=cwd,
        env={**os.environ, "PATH": TOOLS_PATH},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def lint_config(*categories: str) -> str:
    """A buf.yaml body, as JSON, that lints proto/ with only the given rule categories."""
    lint = {"use": list(categories), "disallow_comment_ignores": True}
    return json.dumps({"version": "v2", "modules": [{"path": "proto"}], "lint": lint})


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under directory by relative path, without what Python and pip add at run time."""
    return {
        path.relative_to(directory).as_posix(): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
        and not any(part == "__pycache__" or part.endswith(".egg-info") for part in path.parts)
    }


def test_generated_code_matches_the_contracts(tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    (copy / "scripts").mkdir(parents=True)
    shutil.copytree(PROTO, copy / "proto")
    for name in ("buf.yaml", "buf.gen.yaml", "buf.gen.googleapis.yaml", "scripts/gen"):
        shutil.copy2(ROOT / name, copy / name)
    for name in (".venv", "node_modules"):
        (copy / name).symlink_to(ROOT / name)

    result = run([str(copy / "scripts" / "gen")], cwd=copy)

    assert result.returncode == 0, result.stderr
    for relative in GENERATED_DIRS:
        fresh, committed = snapshot(copy / relative), snapshot(ROOT / relative)
        names = fresh.keys() | committed.keys()
        stale = sorted(name for name in names if fresh.get(name) != committed.get(name))
        assert not stale, f"{relative} is stale, run scripts/gen and commit gen/: {stale}"


def test_buf_lint_passes_with_the_standard_rules() -> None:
    standard = run(["buf", "lint", "--config", lint_config("STANDARD")])
    configured = run(["buf", "lint"])

    assert standard.returncode == 0, standard.stdout + standard.stderr
    assert configured.returncode == 0, configured.stdout + configured.stderr


def test_every_contract_element_has_a_leading_comment() -> None:
    result = run(["buf", "lint", "--config", lint_config("COMMENTS")])

    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_python_imports_from_the_proto_root() -> None:
    paths = sorted(PYTHON_SRC.rglob("*_pb2*.py"))
    names = [".".join(path.relative_to(PYTHON_SRC).with_suffix("").parts) for path in paths]

    assert any(name.startswith("evalmesh.v1.") for name in names), "no evalmesh.v1 modules"
    assert not list(PYTHON_SRC.rglob("__init__.py")), "evalmesh must stay a namespace package"
    for path, name in zip(paths, names, strict=True):
        module = importlib.import_module(name)
        assert Path(str(module.__file__)) == path
        if name.endswith("_pb2"):
            assert module.DESCRIPTOR.package == name.rpartition(".")[0]


def test_every_generated_python_package_is_marked_typed() -> None:
    packages = {path.parent for path in PYTHON_SRC.rglob("*_pb2.py")}

    assert packages
    assert sorted(p for p in packages if not (p / "py.typed").is_file()) == []
