"""A server-side maximum deadline for unary calls, whatever deadline the client sent (or none)."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc.aio

from evalmesh_common import DeadlineExceeded
from evalmesh_common.server.interceptor import (
    CallBehavior,
    HandlerInterceptor,
    MethodHandler,
    wrap_handler,
)

__all__ = ["DeadlineInterceptor"]


class DeadlineInterceptor(HandlerInterceptor):
    """Ends a unary call after ``limit`` seconds with DEADLINE_EXCEEDED.

    Server streams (WatchEvaluation) are left alone: they are meant to stay open, and the client
    ends them or the terminal state does.
    """

    def __init__(self, limit: float) -> None:
        super().__init__()
        self.limit = limit

    def wrap(self, handler: MethodHandler, method: str) -> MethodHandler:
        """Wrap unary-unary handlers in the server's deadline."""
        if handler.request_streaming or handler.response_streaming:
            return handler
        return wrap_handler(handler, call=self._bounded, stream=lambda behavior: behavior)

    def _bounded(self, behavior: CallBehavior) -> CallBehavior:
        limit = self.limit

        async def bounded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                async with asyncio.timeout(limit):
                    return await behavior(request, context)
            except TimeoutError:
                raise DeadlineExceeded(
                    f"the call took longer than the server's limit of {limit:g} s"
                ) from None

        return bounded
