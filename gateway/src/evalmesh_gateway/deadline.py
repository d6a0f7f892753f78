"""A server-side maximum deadline for unary calls, whatever deadline the client sent (or none)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

from evalmesh_common import DeadlineExceeded
from evalmesh_common.interceptor import MethodHandler, ServerInterceptor

__all__ = ["DeadlineInterceptor"]


class DeadlineInterceptor(ServerInterceptor):
    """Ends a unary call after ``limit`` seconds with DEADLINE_EXCEEDED.

    Server streams (WatchEvaluation) are left alone: they are meant to stay open, and the client
    ends them or the terminal state does.
    """

    def __init__(self, limit: float) -> None:
        self.limit = limit

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[MethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> MethodHandler:
        """Wrap unary-unary handlers in the server's deadline."""
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming or handler.response_streaming:
            return handler  # type: ignore[return-value]
        behavior: Callable[..., Awaitable[Any]] = handler.unary_unary  # type: ignore[assignment]
        limit = self.limit

        async def bounded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                async with asyncio.timeout(limit):
                    return await behavior(request, context)
            except TimeoutError:
                raise DeadlineExceeded(
                    f"the call took longer than the server's limit of {limit:g} s"
                ) from None

        return grpc.unary_unary_rpc_method_handler(
            bounded,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
