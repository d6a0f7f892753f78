"""Fixtures that start real grpc.aio servers on port 0 and talk to them over real channels."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any, Protocol

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from evalmesh_common.server import Probe, ServerConfig, ServiceApp

TEST_SERVICE = "evalmesh.test.v1.TestService"


class StartApp(Protocol):
    async def __call__(
        self,
        handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]] | None = None,
        probes: Mapping[str, Probe] | None = None,
        **config: Any,
    ) -> ServiceApp: ...


@pytest.fixture
async def start_app() -> AsyncIterator[StartApp]:
    """Start ServiceApps exposing TEST_SERVICE on 127.0.0.1:0; shut them all down afterwards."""
    apps: list[ServiceApp] = []

    async def start(
        handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]] | None = None,
        probes: Mapping[str, Probe] | None = None,
        **config: Any,
    ) -> ServiceApp:
        settings = {"probe_interval": 0.02, "shutdown_grace": 2.0, **config}
        generic = grpc.method_handlers_generic_handler(TEST_SERVICE, dict(handlers or {}))
        app = ServiceApp(
            "test",
            ServerConfig(**settings),
            services=[TEST_SERVICE],
            add_servicers=lambda server: server.add_generic_rpc_handlers((generic,)),
        )
        for name, probe in (probes or {}).items():
            app.add_probe(name, probe)
        apps.append(app)
        await app.start()
        return app

    yield start
    for app in apps:
        await app.shutdown()


@pytest.fixture
async def open_channel() -> AsyncIterator[Callable[[str], grpc.aio.Channel]]:
    """Open aio channels to addresses; all are closed after the test."""
    channels: list[grpc.aio.Channel] = []

    def open_(address: str) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(address)
        channels.append(channel)
        return channel

    yield open_
    for channel in channels:
        await channel.close(None)


HealthOf = Callable[[grpc.aio.Channel, str], Awaitable[str]]
Eventually = Callable[[Callable[[], Awaitable[bool]]], Awaitable[None]]


@pytest.fixture
def health_of() -> HealthOf:
    """Return the status name (``SERVING``...) a health Check gives for a service."""

    async def check(channel: grpc.aio.Channel, service: str = "") -> str:
        stub = health_pb2_grpc.HealthStub(channel)
        response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
        name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        return name

    return check


@pytest.fixture
def eventually() -> Eventually:
    """Poll a condition until it holds; fail the test after three seconds."""

    async def wait(condition: Callable[[], Awaitable[bool]]) -> None:
        async with asyncio.timeout(3.0):
            # Polling: the condition lives in another component, with no event to await.
            while not await condition():  # noqa: ASYNC110
                await asyncio.sleep(0.01)

    return wait


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo configure_logging's changes to the root logger."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
