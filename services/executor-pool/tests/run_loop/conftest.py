"""Fixtures for the run-loop tests: a real mesh (NATS, storage, scheduler, executors, bwrap).

``mesh`` is shared by a module's tests (one executor, two slots); tests that need their own
scheduler settings (tiny ack_wait, lease) or to kill executors use ``make_mesh``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path

import pytest

from .harness import Driver, Mesh, Service

MakeMesh = Callable[[Mapping[str, str]], Mesh]


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the executor runs the bwrap backend, which needs root (cgroup writes)"
    if shutil.which("bwrap") is None and not os.path.exists("/usr/bin/bwrap"):
        return "bwrap is not installed (apt-get install bubblewrap)"
    return None


@pytest.fixture(scope="module")
def mesh_with_executor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Mesh, Service]]:
    """A module-wide mesh with one executor of two slots."""
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    mesh = Mesh(tmp_path_factory.mktemp("mesh")).start()
    try:
        executor = mesh.executor()
        yield mesh, executor
    finally:
        mesh.stop()


@pytest.fixture
def mesh(mesh_with_executor: tuple[Mesh, Service]) -> Mesh:
    """The module's mesh."""
    return mesh_with_executor[0]


@pytest.fixture
def executor(mesh_with_executor: tuple[Mesh, Service]) -> Service:
    """The module's executor."""
    return mesh_with_executor[1]


@pytest.fixture
def make_mesh(tmp_path: Path) -> Iterator[MakeMesh]:
    """make_mesh(scheduler_env) starts a mesh of the test's own (no executor yet)."""
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    started: list[Mesh] = []

    def make(scheduler_env: Mapping[str, str]) -> Mesh:
        mesh = Mesh(tmp_path / f"mesh-{len(started)}", dict(scheduler_env))
        started.append(mesh)
        return mesh.start()

    yield make
    for mesh in started:
        mesh.stop()


@pytest.fixture
async def driver(mesh: Mesh) -> AsyncIterator[Driver]:
    """Clients of the module's mesh."""
    async with Driver(mesh) as driver:
        yield driver
