"""Client side of grpc.health.v1: wait for a server, or probe an upstream dependency.

``wait_for_serving`` is what tests and scripts use after starting a server; ``health_probe``
is how a service makes an upstream's health one of its own dependency probes (the gateway is
ready only while the scheduler reports SERVING).
"""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from evalmesh_common.backoff import exponential_delay

__all__ = ["HealthProbe", "health_probe", "is_serving", "wait_for_serving"]

_FIRST_RETRY_DELAY = 0.02
_MAX_RETRY_DELAY = 0.5


async def is_serving(
    channel: grpc.aio.Channel,
    service: str = "",
    timeout: float = 1.0,  # noqa: ASYNC109 - a gRPC deadline, which the server sees too
) -> bool:
    """Return True if the server behind ``channel`` reports ``service`` SERVING right now."""
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    except grpc.RpcError:
        return False
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


async def wait_for_serving(
    address: str,
    service: str = "",
    timeout: float = 10.0,  # noqa: ASYNC109 - also bounds each Check's deadline
) -> None:
    """Poll ``address`` until it reports ``service`` SERVING, or raise TimeoutError."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    failures = 0
    async with grpc.aio.insecure_channel(address) as channel:
        while not await is_serving(channel, service, timeout=max(0.05, deadline - loop.time())):
            remaining = deadline - loop.time()
            if remaining <= 0:
                name = service or "the server"
                raise TimeoutError(f"{address} did not report {name} SERVING within {timeout:g}s")
            failures += 1
            delay = exponential_delay(failures, base=_FIRST_RETRY_DELAY, cap=_MAX_RETRY_DELAY)
            await asyncio.sleep(min(delay, remaining))


class HealthProbe:
    """A dependency probe that passes while an upstream reports ``service`` SERVING."""

    def __init__(
        self, target: str | grpc.aio.Channel, service: str = "", timeout: float = 1.0
    ) -> None:
        self._address = target if isinstance(target, str) else None
        self._channel = None if isinstance(target, str) else target
        self.service = service
        self.timeout = timeout

    async def __call__(self) -> bool:
        """Check the upstream once."""
        if self._channel is None:
            # Created on first use so it binds to the running event loop.
            assert self._address is not None
            self._channel = grpc.aio.insecure_channel(self._address)
        # Over a channel balanced across replicas, a failed check may have met the one that
        # just went away (or is draining); the second goes to another, so the upstream counts
        # as up while any replica serves, and losing one of several never makes the service
        # that depends on them NOT_SERVING.
        return await is_serving(self._channel, self.service, self.timeout) or await is_serving(
            self._channel, self.service, self.timeout
        )

    async def aclose(self) -> None:
        """Close the channel if this probe opened it; a channel passed in stays open."""
        if self._address is not None and self._channel is not None:
            await self._channel.close(None)
            self._channel = None


def health_probe(
    target: str | grpc.aio.Channel, service: str = "", timeout: float = 1.0
) -> HealthProbe:
    """Return a probe of ``target`` (an address, or a channel the service already holds)."""
    return HealthProbe(target, service, timeout)
