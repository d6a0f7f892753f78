"""Health follows the dependency probes; reflection lists what the server exposes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from evalmesh_common.server import ServiceApp, health_probe, is_serving, wait_for_serving

StartApp = Callable[..., Awaitable[ServiceApp]]
OpenChannel = Callable[[str], grpc.aio.Channel]
HealthOf = Callable[[grpc.aio.Channel, str], Awaitable[str]]
Eventually = Callable[[Callable[[], Awaitable[bool]]], Awaitable[None]]


class Dependency:
    """A fake dependency whose probe answers what the test says, and counts its calls."""

    def __init__(self, up: bool) -> None:
        self.up = up
        self.calls = 0

    async def probe(self) -> bool:
        self.calls += 1
        if self.up:
            return True
        raise ConnectionRefusedError("connection refused")


async def test_health_is_not_serving_until_every_dependency_probe_passes(
    start_app: StartApp, open_channel: OpenChannel, health_of: HealthOf, eventually: Eventually
) -> None:
    database, nats = Dependency(up=False), Dependency(up=True)
    app = await start_app(probes={"database": database.probe, "nats": nats.probe})
    channel = open_channel(app.address)

    async def probed_twice() -> bool:
        return database.calls >= 2

    await eventually(probed_twice)
    for name in ("", app.services[0]):
        assert await health_of(channel, name) == "NOT_SERVING"

    database.up = True
    await wait_for_serving(app.address, app.services[0], timeout=3)
    assert await health_of(channel, "") == "SERVING"


async def test_health_flips_to_not_serving_when_a_dependency_fails(
    start_app: StartApp, open_channel: OpenChannel, health_of: HealthOf, eventually: Eventually
) -> None:
    database = Dependency(up=True)
    app = await start_app(probes={"database": database.probe})
    channel = open_channel(app.address)
    await wait_for_serving(app.address, timeout=3)

    database.up = False

    async def not_serving() -> bool:
        return await health_of(channel, app.services[0]) == "NOT_SERVING"

    await eventually(not_serving)
    database.up = True
    await wait_for_serving(app.address, app.services[0], timeout=3)


async def test_a_hanging_probe_fails_after_its_timeout(
    start_app: StartApp,
    open_channel: OpenChannel,
    health_of: HealthOf,
    eventually: Eventually,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def hang() -> bool:
        await asyncio.sleep(3600)
        return True

    async def reported() -> bool:
        return any("upstream is down: probe timed out" in r.getMessage() for r in caplog.records)

    with caplog.at_level(logging.WARNING, logger="evalmesh_common.server.health"):
        app = await start_app(probes={"upstream": hang}, probe_timeout=0.05)
        await eventually(reported)
    assert await health_of(open_channel(app.address), "") == "NOT_SERVING"


async def test_an_upstream_health_probe_passes_only_while_the_upstream_serves(
    start_app: StartApp,
) -> None:
    upstream_dependency = Dependency(up=False)
    upstream = await start_app(probes={"db": upstream_dependency.probe})
    probe = health_probe(upstream.address, upstream.services[0], timeout=1)
    try:
        assert not await probe()
        upstream_dependency.up = True
        await wait_for_serving(upstream.address, timeout=3)
        assert await probe()
        assert not await health_probe(upstream.address, "no.such.Service")()
    finally:
        await probe.aclose()


async def test_wait_for_serving_gives_up_after_its_timeout() -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="did not report"):
        await wait_for_serving("127.0.0.1:1", timeout=0.3)
    assert time.monotonic() - started < 5


async def test_health_watchers_see_not_serving_and_are_released_at_shutdown(
    start_app: StartApp, open_channel: OpenChannel
) -> None:
    app = await start_app(shutdown_grace=30.0)
    stub = health_pb2_grpc.HealthStub(open_channel(app.address))
    await wait_for_serving(app.address, timeout=3)
    watch = stub.Watch(health_pb2.HealthCheckRequest(service=""))
    statuses: AsyncIterator[health_pb2.HealthCheckResponse] = watch.__aiter__()
    assert (await anext(statuses)).status == health_pb2.HealthCheckResponse.SERVING

    started = time.monotonic()
    await app.shutdown()

    assert time.monotonic() - started < 10, "an open Watch held the server for the whole grace"
    rest = [response.status async for response in statuses]
    assert rest[-1] == health_pb2.HealthCheckResponse.NOT_SERVING
    assert await watch.code() == grpc.StatusCode.OK


async def test_reflection_lists_the_registered_service(
    start_app: StartApp, open_channel: OpenChannel
) -> None:
    app = await start_app()
    stub = reflection_pb2_grpc.ServerReflectionStub(open_channel(app.address))
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="grpc.health.v1.Health"),
    ]
    listing, health_file = [r async for r in stub.ServerReflectionInfo(iter(requests), timeout=5)]

    names = {service.name for service in listing.list_services_response.service}
    assert names == {
        app.services[0],
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    assert health_file.file_descriptor_response.file_descriptor_proto


async def test_is_serving_is_false_for_an_unknown_service_name(
    start_app: StartApp, open_channel: OpenChannel
) -> None:
    app = await start_app()
    await wait_for_serving(app.address, timeout=3)
    channel = open_channel(app.address)
    assert await is_serving(channel, app.services[0])
    assert not await is_serving(channel, "evalmesh.nothing.v1.Nothing")
