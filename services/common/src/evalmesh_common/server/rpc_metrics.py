"""gRPC server metrics for every ``ServiceApp``: calls by method and status code, and durations.

The names and labels are go-grpc-prometheus's (``grpc_server_started_total``,
``grpc_server_handled_total``, ``grpc_server_handling_seconds``), so stock gRPC dashboards and
alerts work unchanged. The interceptor sits outside the error interceptor, so it counts the code
the client actually received. Methods no servicer implements are not counted (grpc answers
UNIMPLEMENTED before any handler), so a client inventing method names cannot grow the label set.
A server stream's duration is the whole stream's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
from prometheus_client import CollectorRegistry, Counter, Histogram

from evalmesh_common.server.interceptor import (
    CallBehavior,
    HandlerInterceptor,
    MethodHandler,
    StreamBehavior,
    handler_kind,
    wrap_handler,
)

__all__ = ["RpcMetricsInterceptor"]

_Context = grpc.aio.ServicerContext[Any, Any]
_TYPES = {
    "unary_unary": "unary",
    "unary_stream": "server_stream",
    "stream_unary": "client_stream",
    "stream_stream": "bidi_stream",
}
_LABELS = ("grpc_type", "grpc_service", "grpc_method")


class RpcMetricsInterceptor(HandlerInterceptor):
    """Counts and times every call to an implemented method, into ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.started = Counter(
            "grpc_server_started", "RPCs started on the server.", _LABELS, registry=registry
        )
        self.handled = Counter(
            "grpc_server_handled",
            "RPCs completed on the server, by status code.",
            (*_LABELS, "grpc_code"),
            registry=registry,
        )
        self.seconds = Histogram(
            "grpc_server_handling_seconds",
            "Time from an RPC's start to its status, on the server.",
            _LABELS,
            registry=registry,
        )

    def wrap(self, handler: MethodHandler, method: str) -> MethodHandler:
        """Wrap the handler so its start, end and code are recorded."""
        service, _, name = method.lstrip("/").rpartition("/")
        labels = (_TYPES[handler_kind(handler)], service, name)
        return wrap_handler(
            handler,
            call=lambda behavior: self._measure_call(behavior, labels),
            stream=lambda behavior: self._measure_stream(behavior, labels),
        )

    def _measure_call(self, behavior: CallBehavior, labels: tuple[str, ...]) -> CallBehavior:
        async def measured(request: Any, context: _Context) -> Any:
            start = self._start(labels)
            try:
                response = await behavior(request, context)
            except BaseException as exc:
                self._end(labels, start, _failed_code(exc, context))
                raise
            self._end(labels, start, _code(context))
            return response

        return measured

    def _measure_stream(self, behavior: StreamBehavior, labels: tuple[str, ...]) -> StreamBehavior:
        async def measured(request: Any, context: _Context) -> AsyncIterator[Any]:
            start = self._start(labels)
            try:
                async for response in behavior(request, context):
                    yield response
            except BaseException as exc:
                self._end(labels, start, _failed_code(exc, context))
                raise
            self._end(labels, start, _code(context))

        return measured

    def _start(self, labels: tuple[str, ...]) -> float:
        self.started.labels(*labels).inc()
        return time.perf_counter()

    def _end(self, labels: tuple[str, ...], start: float, code: str) -> None:
        self.seconds.labels(*labels).observe(time.perf_counter() - start)
        self.handled.labels(*labels, code).inc()


def _code(context: _Context) -> str:
    code: grpc.StatusCode | None = context.code()  # None unless a handler set one
    return "OK" if code is None else code.name


def _failed_code(exc: BaseException, context: _Context) -> str:
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):  # the client went away
        return "CANCELLED"
    code: grpc.StatusCode | None = context.code()  # set by abort()
    return "UNKNOWN" if code is None else code.name
