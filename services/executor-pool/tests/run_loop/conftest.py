"""Fixtures for the run-loop tests: a real mesh (NATS, storage, scheduler, executors, bwrap).

``mesh`` is shared by a module's tests (one executor, two slots); tests that need their own
scheduler settings (tiny ack_wait, lease) or to kill executors use ``make_mesh``.

Executors run the bwrap backend. A module that sets ``RUN_LOOP_BACKENDS = ("bwrap", "docker")``
runs its mesh tests once per backend (ids end in ``[bwrap]`` / ``[docker]``); the docker
executors use the tests' engine (a private dockerd if none answers, see docker_helpers) with
its offline-built runtime image, and their default warm pool.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path

import pytest

from evalmesh_testing.docker_engine import Engine

from .harness import Driver, Mesh, Service

MakeMesh = Callable[[Mapping[str, str]], Mesh]
BACKENDS = ("bwrap", "docker")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise the mesh's backend where the module asks for more than bwrap."""
    backends = getattr(metafunc.module, "RUN_LOOP_BACKENDS", None)
    if backends is None or "mesh_backend" not in metafunc.fixturenames:
        return
    params = [
        pytest.param(name, marks=[pytest.mark.docker] if name == "docker" else [])
        for name in backends
    ]
    metafunc.parametrize("mesh_backend", params, indirect=True, scope="module")


@pytest.fixture(scope="module")
def mesh_backend(request: pytest.FixtureRequest) -> str:
    """The sandbox backend of the mesh's executors: bwrap unless the module is parametrised."""
    name: str = getattr(request, "param", "bwrap")
    assert name in BACKENDS
    return name


@pytest.fixture(scope="module")
def executor_env(mesh_backend: str, request: pytest.FixtureRequest) -> dict[str, str]:
    """The executors' backend settings; skips, saying why, where the backend cannot run."""
    if mesh_backend == "docker":
        engine: Engine = request.getfixturevalue("docker_engine")
        return {
            "EVALMESH_SANDBOX_BACKEND": "docker",
            "EVALMESH_DOCKER_HOST": engine.base_url,
            "EVALMESH_DOCKER_IMAGES": "python-ml=",  # not built for these tests
        }
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    return {"EVALMESH_SANDBOX_BACKEND": "bwrap"}


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the executor runs the bwrap backend, which needs root (cgroup writes)"
    if shutil.which("bwrap") is None and not os.path.exists("/usr/bin/bwrap"):
        return "bwrap is not installed (apt-get install bubblewrap)"
    return None


@pytest.fixture(scope="module")
def mesh_with_executor(
    tmp_path_factory: pytest.TempPathFactory, executor_env: dict[str, str]
) -> Iterator[tuple[Mesh, Service]]:
    """A module-wide mesh with one executor of two slots."""
    mesh = Mesh(tmp_path_factory.mktemp("mesh"), executor_env=executor_env).start()
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
def make_mesh(tmp_path: Path, executor_env: dict[str, str]) -> Iterator[MakeMesh]:
    """make_mesh(scheduler_env) starts a mesh of the test's own (no executor yet)."""
    started: list[Mesh] = []

    def make(scheduler_env: Mapping[str, str]) -> Mesh:
        mesh = Mesh(tmp_path / f"mesh-{len(started)}", dict(scheduler_env), executor_env)
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
