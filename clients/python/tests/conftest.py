"""Fixtures of the client tests: a tiny scripted gRPC server, and the real mesh on port 0."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from client_fake_gateway import FakeGateway
from client_mesh import Cli, Mesh, start_mesh

from evalmesh.client import Client, Role
from evalmesh_testing.ports import free_port


@pytest.fixture
def fake_gateway() -> Iterator[FakeGateway]:
    """A real gRPC server on a free port answering what the test scripts."""
    server = FakeGateway().start()
    yield server
    server.stop()


@pytest.fixture
def unused_port() -> int:
    """A loopback port nothing listens on."""
    return free_port()


@pytest.fixture(scope="session")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """The whole real mesh (NATS, storage, scheduler, executor-pool, gateway, Envoy).

    Skips, with the launcher's own error as the reason, only when the mesh cannot start here.
    """
    started = start_mesh(tmp_path_factory.mktemp("mesh"))
    if isinstance(started, str):
        pytest.skip(started)
    yield started
    started.local.stop()


@pytest.fixture
def client(mesh: Mesh) -> Iterator[Client]:
    """A blocking client with the mesh's first admin key (tenant "default")."""
    with Client(mesh.address, mesh.admin_key, timeout=30) as made:
        yield made


@pytest.fixture(scope="session")
def user_key(mesh: Mesh) -> str:
    """The secret of a user-role key of its own tenant."""
    with Client(mesh.address, mesh.admin_key) as admin:
        return admin.create_api_key(f"user-{int(time.time())}", Role.USER, "client tests").secret


@pytest.fixture
def cli_env(mesh: Mesh, tmp_path: Path) -> dict[str, str]:
    """The environment of a user whose shell points the CLI at the test mesh."""
    home = tmp_path / "home"
    home.mkdir()
    return {
        **os.environ,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "EVALMESH_ADDRESS": mesh.address,
        "EVALMESH_API_KEY": mesh.admin_key,
        "NO_COLOR": "1",
        "COLUMNS": "200",
    }


@pytest.fixture
def evalmesh(cli_env: dict[str, str], tmp_path: Path) -> Cli:
    """Run ``evalmesh ARGS`` as a user would, in a scratch working directory."""
    return Cli(cli_env, tmp_path)
