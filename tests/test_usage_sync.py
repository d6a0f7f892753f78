"""Gateways exchanging tenant usage over a real nats-server: a lone gateway stays quiet after its
hello, and a second one is answered at once and then hears every change."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from evalmesh.gateway.v1 import usage_pb2
from evalmesh_common.messaging import NatsConnection
from evalmesh_common.subjects import TENANT_USAGE_SUBJECT
from evalmesh_gateway.ratelimit import RateLimiter
from evalmesh_gateway.usage import ClusterUsage, WatchCap
from evalmesh_gateway.usage_sync import UsageSync

INTERVAL = 0.02
HEARTBEAT = 0.1


class Gateway:
    def __init__(self, url: str, name: str) -> None:
        self.nats = NatsConnection(url, name)
        self.limiter = RateLimiter(rate=0.01, burst=100)  # refills next to nothing meanwhile
        self.usage = ClusterUsage(name, self.limiter, WatchCap(10))
        self.sync = UsageSync(self.nats, self.usage, INTERVAL, heartbeat=HEARTBEAT)

    async def start(self) -> None:
        self.sync.start()
        self.nats.start()
        await self.nats.wait_connected()

    async def stop(self) -> None:
        await self.sync.close()
        await self.nats.close()


@pytest.fixture
async def reports(nats_url: str) -> AsyncIterator[list[usage_pb2.GatewayUsage]]:
    """Every report published on the usage subject, in order."""
    listener = NatsConnection(nats_url, "listener")
    seen: list[usage_pb2.GatewayUsage] = []

    async def subscribe(client: object, reconnected: bool) -> None:
        async def on_message(message: object) -> None:
            seen.append(usage_pb2.GatewayUsage.FromString(message.data))  # type: ignore[attr-defined]

        await listener.client.subscribe(TENANT_USAGE_SUBJECT, cb=on_message)
        await listener.client.flush()

    listener.on_connect(subscribe)
    listener.start()
    await listener.wait_connected()
    await asyncio.sleep(0.05)
    yield seen
    await listener.close()


async def _until(condition: Callable[[], bool], within: float = 5.0) -> None:
    for _ in range(int(within / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not within {within:g} s")


async def test_a_lone_gateway_says_hello_and_then_nothing_while_it_admits(
    nats_url: str, reports: list[usage_pb2.GatewayUsage]
) -> None:
    gateway = Gateway(nats_url, "gateway-a")
    await gateway.start()
    try:
        await _until(lambda: len(reports) == 1)
        for _ in range(50):
            gateway.limiter.acquire("tenant-1", 0.1)
            await asyncio.sleep(INTERVAL / 2)
        await asyncio.sleep(3 * HEARTBEAT)
        assert [(r.gateway_id, r.hello) for r in reports] == [("gateway-a", True)]
    finally:
        await gateway.stop()


async def test_a_second_gateway_is_answered_and_then_hears_every_change(
    nats_url: str, reports: list[usage_pb2.GatewayUsage]
) -> None:
    first, second = Gateway(nats_url, "gateway-a"), Gateway(nats_url, "gateway-b")
    await first.start()
    first.limiter.acquire("tenant-1")
    await second.start()
    try:
        await _until(lambda: first.usage.peers == 1 and second.usage.peers == 1)
        # The answer to the hello carried what the lone gateway had admitted meanwhile.
        await _until(lambda: second.limiter.level("tenant-1") < 99.5)
        first.limiter.acquire("tenant-1", 10)
        await _until(lambda: second.limiter.level("tenant-1") < 89.5)
        assert {r.gateway_id for r in reports} == {"gateway-a", "gateway-b"}
    finally:
        await second.stop()
        await first.stop()
