"""Fixtures: a real nats-server and storage process per test; schedulers started by each test.

Everything runs on free ports and is stopped by pid (see ``scheduler_test_helpers.Mesh``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import grpc.aio
import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from scheduler_test_helpers import Mesh

from evalmesh.storage.v1 import storage_service_pb2_grpc
from evalmesh_common.server import wait_for_serving


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    """NATS and storage running; start schedulers with ``await mesh.start_scheduler(...)``."""
    running = Mesh(tmp_path)
    running.start_nats()
    running.start_storage()
    yield running
    running.stop()


@pytest.fixture
def bare_nats(tmp_path: Path) -> Iterator[Mesh]:
    """Only nats-server, for tests of the topology and the leader election in-process."""
    running = Mesh(tmp_path)
    running.start_nats()
    yield running
    running.stop()


@pytest.fixture
async def channels() -> AsyncIterator[Callable[[str], grpc.aio.Channel]]:
    """Open aio channels; all closed after the test."""
    opened: list[grpc.aio.Channel] = []

    def open_(address: str) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(address)
        opened.append(channel)
        return channel

    yield open_
    for channel in opened:
        await channel.close(None)


@pytest.fixture
async def storage(
    mesh: Mesh, channels: Callable[[str], grpc.aio.Channel]
) -> storage_service_pb2_grpc.StorageServiceAsyncStub:
    """A client of the real storage service (tests claim and complete through it directly)."""
    await wait_for_serving(mesh.storage_address, timeout=20)
    return storage_service_pb2_grpc.StorageServiceStub(channels(mesh.storage_address))


@pytest.fixture
async def natsc(mesh: Mesh) -> AsyncIterator[Client]:
    """The test's own NATS connection (reconnecting, like a service's)."""
    client = await nats.connect(
        mesh.nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.2, name="test"
    )
    yield client
    await client.close()


@pytest.fixture
def js(natsc: Client) -> JetStreamContext:
    return natsc.jetstream()
