"""The package layers drawn in docs/architecture.md hold in the code.

Domain modules load no grpc; the shared library's core imports nothing but the standard library;
services never import each other; no production package imports test support. Imports are read
from the source (``ast``), except "loads no grpc", which imports the modules in a fresh
interpreter: that is the only way to see what an import drags in through other packages.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Packages (or modules) that exist for tests only. No production package may import them.
TEST_SUPPORT = ("evalmesh_testing",)
# Their distributions (testing/): no production distribution may depend on them.
TEST_SUPPORT_DISTRIBUTIONS = ("evalmesh-testing",)

# The deployables: each may import itself, the shared library and the generated contracts, and no
# other first-party package.
SERVICES = {
    "evalmesh_storage": "services/storage/src",
    "evalmesh_scheduler": "services/scheduler/src",
    "evalmesh_executor": "services/executor-pool/src",
    "evalmesh_gateway": "gateway/src",
    "evalmesh_envoy": "envoy/src",
}
COMMON = "evalmesh_common"
COMMON_SRC = "services/common/src"
GENERATED_SRC = ROOT / "gen" / "python" / "src"

# Domain code, which must load no grpc. "pkg.*" is every module below pkg, less those in EDGE.
DOMAIN = {
    "common core": ("evalmesh_common.*",),
    "storage": ("evalmesh_storage.*",),
    "scheduler": (
        "evalmesh_scheduler.jobs",
        "evalmesh_scheduler.leader",
        "evalmesh_scheduler.loops",
        "evalmesh_scheduler.runtimes",
    ),
    "executor": (
        "evalmesh_executor.sandbox.*",
        "evalmesh_executor.heartbeat",
        "evalmesh_executor.runs",
    ),
    "gateway": (
        "evalmesh_gateway.names",
        "evalmesh_gateway.operations",
        "evalmesh_gateway.ratelimit",
        "evalmesh_gateway.validation",
    ),
}
# Under a "pkg.*" above, the modules that are the gRPC edge: the server layer, entry points,
# servicers, and configs that hold a ServerConfig. Alembic's env runs only inside alembic.
EDGE = (
    "evalmesh_common.server",
    "evalmesh_storage.__main__",
    "evalmesh_storage.app",
    "evalmesh_storage.config",
    "evalmesh_storage.servicer",
    "evalmesh_storage.migrations",
)


def source_roots() -> Iterator[Path]:
    """The src/ folders of every production distribution (generated stubs excepted)."""
    for pattern in ("services/*/src", "*/src", "clients/*/src"):
        yield from (path for path in sorted(ROOT.glob(pattern)) if path != GENERATED_SRC)


def modules_under(src: Path, package: str) -> Iterator[tuple[str, Path]]:
    """Every module of ``package`` (found in ``src``) as (dotted name, file)."""
    for path in sorted((src / package.replace(".", "/")).rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def imported(path: Path, module: str) -> Iterator[str]:
    """The absolute names ``path`` imports anywhere in it, relative imports resolved."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            name = ".".join(part for part in (base, node.module) if part)
            yield name
            yield from (f"{name}.{alias.name}" for alias in node.names)


def within(name: str, prefix: str) -> bool:
    """``name`` is ``prefix`` or below it."""
    return name == prefix or name.startswith(prefix + ".")


def first_party(name: str) -> str | None:
    """The first-party package ``name`` belongs to ("contracts" for generated stubs), or None."""
    top, _, rest = name.partition(".")
    if top.startswith("evalmesh_"):
        return top
    if top != "evalmesh" or not rest:
        return None
    area = rest.partition(".")[0]
    return "contracts" if (GENERATED_SRC / "evalmesh" / area).is_dir() else f"evalmesh.{area}"


def domain_modules(patterns: tuple[str, ...]) -> list[str]:
    """The module names ``patterns`` stand for, from the source tree."""
    names: list[str] = []
    for pattern in patterns:
        package = pattern.removesuffix(".*")
        if package == pattern:
            names.append(pattern)
            continue
        top = package.partition(".")[0]
        src = ROOT / (COMMON_SRC if top == COMMON else SERVICES[top])
        found = [name for name, _ in modules_under(src, package)]
        names += [n for n in found if not any(within(n, edge) for edge in EDGE)]
    return names


@pytest.mark.parametrize("group", sorted(DOMAIN))
def test_domain_modules_load_no_grpc(group: str) -> None:
    names = domain_modules(DOMAIN[group])
    assert names, f"no {group} modules found: the layout moved, so update DOMAIN"
    # In one fresh interpreter, in order: the first module after which grpc is loaded is the one
    # that pulled it in (alone, `python -c "import NAME"` shows the same).
    program = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "    if 'grpc' in sys.modules:\n"
        "        print(name)\n"
        "        break\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"importing {result.stdout.strip()} loads grpc"


def test_the_common_core_imports_only_the_standard_library_and_itself() -> None:
    src = ROOT / COMMON_SRC
    for module, path in modules_under(src, COMMON):
        if within(module, f"{COMMON}.server") or module == f"{COMMON}.messaging":
            continue
        for name in imported(path, module):
            top = name.partition(".")[0]
            allowed = top in sys.stdlib_module_names or top == "__future__"
            assert allowed or (within(name, COMMON) and not within(name, f"{COMMON}.server")), (
                f"{module} imports {name}: the core is pure Python (see docs/architecture.md)"
            )


def test_the_shared_library_layers_import_downwards_only() -> None:
    # core <- messaging, core <- server; the core knows neither, and they do not know each other.
    src = ROOT / COMMON_SRC
    layers = {"server": f"{COMMON}.server", "messaging": f"{COMMON}.messaging"}
    for module, path in modules_under(src, COMMON):
        own = next((layer for layer, top in layers.items() if within(module, top)), "core")
        for name in imported(path, module):
            for layer, top in layers.items():
                assert layer == own or not within(name, top), f"{module} imports {name}"
            assert first_party(name) in (None, COMMON), f"{module} imports {name}"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_services_never_import_each_other(service: str) -> None:
    allowed = {service, COMMON, "contracts", None}
    for module, path in modules_under(ROOT / SERVICES[service], service):
        for name in imported(path, module):
            assert first_party(name) in allowed, (
                f"{module} imports {name}: a service depends only on evalmesh_common and the "
                "generated contracts"
            )


def test_no_production_package_imports_test_support() -> None:
    roots = list(source_roots())
    assert len(roots) >= len(SERVICES) + 2  # the services, common and the client at least
    for src in roots:
        for package in sorted(p.name for p in src.iterdir() if p.name.isidentifier()):
            for module, path in modules_under(src, package):
                if any(within(module, support) for support in TEST_SUPPORT):
                    continue
                for name in imported(path, module):
                    assert not any(within(name, support) for support in TEST_SUPPORT), (
                        f"{module} imports {name}, which is test support"
                    )


def test_no_production_distribution_depends_on_test_support() -> None:
    for pyproject in sorted(ROOT.glob("**/pyproject.toml")):
        if pyproject.parent == ROOT or {"node_modules", ".venv", "build"} & set(pyproject.parts):
            continue
        project = tomllib.loads(pyproject.read_text()).get("project", {})
        if project.get("name") in TEST_SUPPORT_DISTRIBUTIONS:
            continue
        wanted = [*project.get("dependencies", [])]
        for extra in project.get("optional-dependencies", {}).values():
            wanted += extra
        for requirement in wanted:
            name = re.split(r"[\[=<>~! ;]", requirement, maxsplit=1)[0]
            assert name not in TEST_SUPPORT_DISTRIBUTIONS, f"{pyproject} requires {requirement}"
