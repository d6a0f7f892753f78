"""Cross-service fixtures: real nats-server and real service processes on port 0, stopped by pid."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from evalmesh.local.bootstrap import create_admin_key
from evalmesh.local.mesh import LocalMesh, MeshEndpoints
from evalmesh.local.nats import start_nats
from evalmesh.local.processes import ManagedProcess, read_port_file

ROOT = Path(__file__).resolve().parent.parent

StartService = Callable[[str, Mapping[str, str]], tuple[ManagedProcess, str]]


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    """A fresh nats-server with JetStream on a free port."""
    process, url = start_nats(tmp_path / "nats")
    yield url
    process.stop()


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[StartService]:
    """Start ``python -m MODULE`` with the given environment; return it and its address."""
    started: list[ManagedProcess] = []

    def start(module: str, env: Mapping[str, str]) -> tuple[ManagedProcess, str]:
        port_file = tmp_path / f"{module}-{len(started)}.port"
        full_env = {
            **os.environ,
            "EVALMESH_LISTEN_ADDRESS": "127.0.0.1:0",
            "EVALMESH_PORT_FILE": str(port_file),
            "EVALMESH_PROBE_INTERVAL": "0.2",
            **env,
        }
        log = tmp_path / "logs" / f"{module}-{len(started)}.log"
        process = ManagedProcess(module, [sys.executable, "-m", module], log, full_env)
        process.start()
        started.append(process)
        return process, f"127.0.0.1:{read_port_file(port_file, process)}"

    yield start
    for process in reversed(started):
        process.stop()


@pytest.fixture(scope="session")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshEndpoints]:
    """The whole mesh, once per test session: NATS, the four services and Envoy."""
    local = LocalMesh(
        tmp_path_factory.mktemp("mesh"),
        edge_port=0,
        # A small burst so the rate-limit tests reach the limit quickly.
        extra_env={
            "EVALMESH_PROBE_INTERVAL": "0.2",
            "EVALMESH_TENANT_RATE": "20",
            "EVALMESH_TENANT_BURST": "60",
        },
        bootstrap_key=create_admin_key,
    )
    endpoints = local.start(timeout=120)
    yield endpoints
    local.stop()
