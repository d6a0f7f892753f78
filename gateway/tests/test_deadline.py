"""A03: a call with no deadline, or an absurd one, still ends at the server's own maximum."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest

from evalmesh_common.server import ErrorInterceptor
from evalmesh_gateway.deadline import DeadlineInterceptor

METHOD = "/test.Slow/Call"


async def _slow(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    await asyncio.sleep(5)
    return request


@pytest.fixture
async def address() -> AsyncIterator[str]:
    server = grpc.aio.server(interceptors=[ErrorInterceptor(), DeadlineInterceptor(0.3)])
    handler = grpc.method_handlers_generic_handler(
        "test.Slow", {"Call": grpc.unary_unary_rpc_method_handler(_slow)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(None)


@pytest.mark.parametrize("client_deadline", [None, 10**6], ids=["none", "absurd"])
async def test_the_servers_maximum_deadline_applies_whatever_the_client_asks(
    address: str, client_deadline: float | None
) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(METHOD, None, None)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(b"x", timeout=client_deadline)
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert loop.time() - started < 2
