"""The sandbox package keeps its layers (see the sandbox README, "Layout").

``sandbox.core`` knows no backend; ``sandbox.bwrap`` and ``sandbox.docker`` build on the core and
never on each other; the programs that run first inside a sandbox import nothing but the
standard library (they run with the sandbox's interpreter, where the executor is not installed);
and the run loop sees only the sandbox surface, never a backend: only the factory that chooses
one (``backend.py``) and the tree builder (a bwrap runtime's packages) name a backend. Imports
are read from the source.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "evalmesh_executor"
SANDBOX = f"{PACKAGE}.sandbox"
CORE, BWRAP, DOCKER = (f"{SANDBOX}.{name}" for name in ("core", "bwrap", "docker"))
# What runs first inside a sandbox, with the sandbox's own interpreter.
IN_SANDBOX = (f"{BWRAP}.boot", f"{DOCKER}.init")
# The executor's modules that may name a backend.
CHOOSERS = (f"{PACKAGE}.backend", f"{PACKAGE}.treebuild")


def _modules(package: str) -> Iterator[tuple[str, Path]]:
    for path in sorted((SRC / package.replace(".", "/")).rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def _imports(module: str, path: Path) -> Iterator[str]:
    """Every absolute name ``module`` imports (relative imports resolved)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            name = ".".join(part for part in (base, node.module) if part)
            yield name
            yield from (f"{name}.{alias.name}" for alias in node.names)


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_the_sandbox_modules_are_where_the_layers_expect_them() -> None:
    found = {module for module, _ in _modules(SANDBOX)}
    assert {CORE, BWRAP, DOCKER, *IN_SANDBOX} <= found
    assert all(
        _within(m, CORE) or _within(m, BWRAP) or _within(m, DOCKER) for m in found - {SANDBOX}
    )


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [(CORE, (BWRAP, DOCKER)), (BWRAP, (DOCKER,)), (DOCKER, (BWRAP,)), (SANDBOX, (BWRAP, DOCKER))],
)
def test_sandbox_layers_import_downwards_only(layer: str, forbidden: tuple[str, ...]) -> None:
    for module, path in _modules(layer):
        if layer == SANDBOX and module != SANDBOX:
            continue  # the face alone: it hands on the core's value types
        for name in _imports(module, path):
            assert not any(_within(name, other) for other in forbidden), f"{module} imports {name}"


@pytest.mark.parametrize("module", IN_SANDBOX)
def test_the_programs_run_inside_a_sandbox_import_only_the_standard_library(module: str) -> None:
    path = SRC / (module.replace(".", "/") + ".py")
    for name in _imports(module, path):
        top = name.partition(".")[0]
        assert top in sys.stdlib_module_names or top == "__future__", f"{module} imports {name}"


def test_the_run_loop_sees_the_sandbox_surface_and_no_backend() -> None:
    for module, path in _modules(PACKAGE):
        if _within(module, SANDBOX) or module in CHOOSERS:
            continue
        for name in _imports(module, path):
            assert not any(_within(name, backend) for backend in (BWRAP, DOCKER)), (
                f"{module} imports {name}: the run loop uses the sandbox surface "
                "(evalmesh_executor.sandbox, sandbox.core.backend); backend.py chooses a backend"
            )
