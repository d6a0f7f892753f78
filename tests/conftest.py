"""Cross-service fixtures: real nats-server and real service processes on port 0, stopped by pid."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from evalmesh_deploy.local.mesh import MeshEndpoints
from evalmesh_deploy.local.nats import start_nats
from evalmesh_deploy.local.processes import ManagedProcess
from evalmesh_testing.mesh import running_mesh
from evalmesh_testing.nats_cluster import NatsCluster
from evalmesh_testing.servers import start_server

ROOT = Path(__file__).resolve().parent.parent

StartService = Callable[[str, Mapping[str, str]], tuple[ManagedProcess, str]]


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    """A fresh nats-server with JetStream on a free port."""
    process, url = start_nats(tmp_path / "nats")
    yield url
    process.stop()


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """Three nats-server processes in one JetStream cluster on free ports, healthy."""
    with NatsCluster(tmp_path / "nats-cluster") as cluster:
        yield cluster


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[StartService]:
    """Start ``python -m MODULE`` with the given environment; return it and its address."""
    started: list[ManagedProcess] = []

    def start(module: str, env: Mapping[str, str]) -> tuple[ManagedProcess, str]:
        name = f"{module}-{len(started)}"
        process, address = start_server(
            module, {"EVALMESH_PROBE_INTERVAL": "0.2", **env}, tmp_path, name
        )
        started.append(process)
        return process, address

    yield start
    for process in reversed(started):
        process.stop()


@pytest.fixture(scope="session")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshEndpoints]:
    """The whole mesh, once per test session: NATS, the four services and Envoy."""
    # A small burst so the rate-limit tests reach the limit quickly.
    env = {
        "EVALMESH_PROBE_INTERVAL": "0.2",
        "EVALMESH_TENANT_RATE": "20",
        "EVALMESH_TENANT_BURST": "60",
    }
    with running_mesh(tmp_path_factory.mktemp("mesh"), env) as local:
        yield local.endpoints
