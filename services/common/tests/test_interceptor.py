"""Handler interceptors wrap each method's handler once; every call still runs through it."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest

from evalmesh_common.server import ErrorInterceptor
from evalmesh_common.server.interceptor import (
    CallBehavior,
    HandlerInterceptor,
    MethodHandler,
    wrap_handler,
)

_Context = grpc.aio.ServicerContext[Any, Any]


class CountingInterceptor(HandlerInterceptor):
    """Counts the wraps it makes and the calls that pass through them."""

    def __init__(self) -> None:
        super().__init__()
        self.wraps: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()

    def wrap(self, handler: MethodHandler, method: str) -> MethodHandler:
        self.wraps[method] += 1
        return wrap_handler(
            handler, call=lambda behavior: self._count(behavior, method), stream=lambda b: b
        )

    def _count(self, behavior: CallBehavior, method: str) -> CallBehavior:
        async def counted(request: Any, context: _Context) -> Any:
            self.calls[method] += 1
            return await behavior(request, context)

        return counted


async def _echo(request: bytes, context: _Context) -> bytes:
    return request


async def _fail(request: bytes, context: _Context) -> bytes:
    raise RuntimeError("a bug")


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, CountingInterceptor]]:
    counting = CountingInterceptor()
    server = grpc.aio.server(interceptors=[counting, ErrorInterceptor()])
    handler = grpc.method_handlers_generic_handler(
        "test.Echo",
        {
            "Echo": grpc.unary_unary_rpc_method_handler(_echo),
            "Fail": grpc.unary_unary_rpc_method_handler(_fail),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}", counting
    await server.stop(None)


async def test_each_methods_handler_is_wrapped_once_and_every_call_runs_through_it(
    served: tuple[str, CountingInterceptor],
) -> None:
    address, counting = served
    async with grpc.aio.insecure_channel(address) as channel:
        echo = channel.unary_unary("/test.Echo/Echo", None, None)
        fail = channel.unary_unary("/test.Echo/Fail", None, None)
        for n in range(5):
            assert await echo(b"%d" % n) == b"%d" % n
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await fail(b"x")
            # The error interceptor's wrap is kept too, and still answers each call.
            assert raised.value.code() == grpc.StatusCode.INTERNAL
            assert "a bug" not in (raised.value.details() or "")
    assert counting.wraps == {"/test.Echo/Echo": 1, "/test.Echo/Fail": 1}
    assert counting.calls == {"/test.Echo/Echo": 5, "/test.Echo/Fail": 5}
