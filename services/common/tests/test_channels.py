"""Upstream channels over several replicas: balanced, and a replica that goes away is skipped."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]

from evalmesh_common.server.channels import channel_options, grpc_target, plaintext_channel
from evalmesh_common.server.health_client import health_probe

METHOD = "/evalmesh.test.v1.Replica/Name"


def test_one_address_is_used_as_it_is() -> None:
    assert grpc_target("storage:50051") == "storage:50051"
    assert grpc_target("dns:///storage:50051") == "dns:///storage:50051"


def test_a_list_of_addresses_becomes_one_target_of_its_address_family() -> None:
    assert grpc_target("127.0.0.1:1, 127.0.0.1:2") == "ipv4:127.0.0.1:1,127.0.0.1:2"
    assert grpc_target("[::1]:1,[::1]:2") == "ipv6:[::1]:1,[::1]:2"


@pytest.mark.parametrize(
    "address", ["storage-1:1,storage-2:1", "127.0.0.1:1,[::1]:2", "1.2.3.4,1.2.3.5:1"]
)
def test_a_list_with_names_mixed_families_or_no_port_is_refused(address: str) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        grpc_target(address)


def test_channels_balance_round_robin_unless_told_otherwise() -> None:
    assert any("round_robin" in str(value) for _, value in channel_options())
    own = [("grpc.service_config", "{}")]
    assert [v for n, v in channel_options(own) if n == "grpc.service_config"] == ["{}"]


def test_channels_retry_a_lost_peer_within_two_seconds_unless_told_otherwise() -> None:
    options = dict(channel_options())
    assert options["grpc.max_reconnect_backoff_ms"] <= 2000
    assert options["grpc.initial_reconnect_backoff_ms"] <= options["grpc.max_reconnect_backoff_ms"]
    assert (
        dict(channel_options([("grpc.max_reconnect_backoff_ms", 9000)]))[
            "grpc.max_reconnect_backoff_ms"
        ]
        == 9000
    )


class Replica:
    def __init__(self, name: str) -> None:
        self.name = name
        self.server = grpc.aio.server()
        handler = grpc.unary_unary_rpc_method_handler(self._answer)
        self.server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler("evalmesh.test.v1.Replica", {"Name": handler})]
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    async def _answer(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        return self.name.encode()


@pytest.fixture
async def replicas() -> AsyncIterator[list[Replica]]:
    started = [Replica("a"), Replica("b")]
    for replica in started:
        await replica.server.start()
    yield started
    for replica in started:
        await replica.server.stop(None)


async def _names(channel: grpc.aio.Channel, calls: int) -> Counter[str]:
    call = channel.unary_unary(METHOD, None, None)
    names = Counter[str]()
    for _ in range(calls):
        try:
            names[(await call(b"", timeout=2)).decode()] += 1
        except grpc.aio.AioRpcError as error:
            names[error.code().name] += 1
    return names


async def test_calls_go_to_every_replica_and_skip_one_that_stopped(replicas: list[Replica]) -> None:
    address = ",".join(f"127.0.0.1:{replica.port}" for replica in replicas)
    async with plaintext_channel(address) as channel:
        await channel.channel_ready()
        assert set(await _names(channel, 20)) == {"a", "b"}
        await replicas[0].server.stop(None)
        assert (await _names(channel, 20))["UNAVAILABLE"] <= 1  # the one that finds it gone
        assert await _names(channel, 20) == Counter({"b": 20})


async def test_a_probe_over_replicas_passes_while_any_replica_serves() -> None:
    servers, addresses, healths = [], [], []
    for _ in range(2):
        server = grpc.aio.server()
        health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        addresses.append(f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}")
        await server.start()
        servers.append(server)
        healths.append(health)
    await healths[0].set("svc", health_pb2.HealthCheckResponse.NOT_SERVING)
    await healths[1].set("svc", health_pb2.HealthCheckResponse.SERVING)
    try:
        async with plaintext_channel(",".join(addresses)) as channel:
            await channel.channel_ready()
            probe = health_probe(channel, "svc")
            # Round robin picks among the replicas connected so far; wait until the serving one
            # is among them (the channel is ready as soon as either is).
            for _ in range(200):
                if await probe():
                    break
                await asyncio.sleep(0.05)
            # Round robin alternates between the two: one check alone would fail every other.
            assert all([await probe() for _ in range(10)])
            await healths[1].set("svc", health_pb2.HealthCheckResponse.NOT_SERVING)
            assert not any([await probe() for _ in range(4)])
    finally:
        for server in servers:
            await server.stop(None)
