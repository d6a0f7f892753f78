"""A server interceptor that turns exceptions from any handler into proper gRPC statuses.

Servicers raise :class:`~evalmesh_common.errors.DomainError` and let this interceptor answer
with the mapped code and ``google.rpc`` details. Anything else is a bug: it is logged with its
traceback under a fresh incident id and the caller sees only ``INTERNAL`` and that id, never
the exception text (which may hold SQL, paths or another tenant's data).
"""

from __future__ import annotations

import abc
import inspect
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
import grpc.aio

from evalmesh_common.errors import DomainError, Internal
from evalmesh_common.server.status import abort_with, error_from_rpc

__all__ = [
    "CallBehavior",
    "ErrorInterceptor",
    "HandlerInterceptor",
    "MethodHandler",
    "ServerInterceptor",
    "StreamBehavior",
    "handler_kind",
    "wrap_handler",
]

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
    MethodHandler = grpc.RpcMethodHandler[Any, Any]
else:  # the runtime classes are not generic
    ServerInterceptor = grpc.aio.ServerInterceptor
    MethodHandler = grpc.RpcMethodHandler

_Context = grpc.aio.ServicerContext[Any, Any]
CallBehavior = Callable[[Any, _Context], Awaitable[Any]]
"""An async handler that answers with one response (unary or client-streaming)."""
StreamBehavior = Callable[[Any, _Context], AsyncIterator[Any]]
"""An async-generator handler that yields the responses (server- or bidi-streaming)."""

_FACTORIES: dict[str, Callable[..., MethodHandler]] = {
    "unary_unary": grpc.unary_unary_rpc_method_handler,
    "unary_stream": grpc.unary_stream_rpc_method_handler,
    "stream_unary": grpc.stream_unary_rpc_method_handler,
    "stream_stream": grpc.stream_stream_rpc_method_handler,
}


class HandlerInterceptor(ServerInterceptor):
    """A server interceptor that wraps the handler of every implemented method.

    The one prologue of every interceptor here: ask for the handler chosen for this call, pass an
    unknown method through (grpc answers UNIMPLEMENTED before any handler runs, so nothing is
    wrapped or counted for it), and hand the rest to :meth:`wrap`.

    A method's wrapped handler is made once and kept, for as long as the handler it wraps is the
    one chosen: wrapping inspects the handler and builds a new one, which every call paid for.
    """

    def __init__(self) -> None:
        # method -> (the handler chosen for it, that handler wrapped)
        self._wrapped: dict[str, tuple[MethodHandler, MethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[MethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> MethodHandler:
        """The handler chosen for this call, as :meth:`wrap` makes it."""
        handler = await continuation(handler_call_details)
        if handler is None:  # the stubs omit Optional
            return None  # type: ignore[return-value]
        method = handler_call_details.method
        kept = self._wrapped.get(method)
        if kept is not None and kept[0] is handler:
            return kept[1]
        wrapped = self.wrap(handler, method)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    @abc.abstractmethod
    def wrap(self, handler: MethodHandler, method: str) -> MethodHandler:
        """``handler`` for ``method`` (``/package.Service/Method``), wrapped or as it is."""


class ErrorInterceptor(HandlerInterceptor):
    """Map ``DomainError`` to its status and unexpected exceptions to a bare ``INTERNAL``."""

    def wrap(self, handler: MethodHandler, method: str) -> MethodHandler:
        """Wrap the handler so its exceptions are translated."""
        return wrap_handler(
            handler,
            call=lambda behavior: _guard_call(behavior, method),
            stream=lambda behavior: _guard_stream(behavior, method),
        )


def wrap_handler(
    handler: MethodHandler,
    *,
    call: Callable[[CallBehavior], CallBehavior],
    stream: Callable[[StreamBehavior], StreamBehavior],
) -> MethodHandler:
    """``handler`` with its async behavior wrapped by ``call`` or ``stream`` (by its shape).

    A sync handler is returned as it is: it runs on grpc's thread pool, outside the event loop.
    """
    kind = handler_kind(handler)
    behavior = getattr(handler, kind)
    if inspect.isasyncgenfunction(behavior):
        wrapped: Callable[..., Any] = stream(behavior)
    elif inspect.iscoroutinefunction(behavior):
        wrapped = call(behavior)
    else:
        return handler
    return _FACTORIES[kind](
        wrapped,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def handler_kind(handler: MethodHandler) -> str:
    """``unary_unary``, ``unary_stream``, ``stream_unary`` or ``stream_stream``."""
    prefix = "stream" if handler.request_streaming else "unary"
    suffix = "stream" if handler.response_streaming else "unary"
    return f"{prefix}_{suffix}"


def _guard_call(behavior: CallBehavior, method: str) -> CallBehavior:
    async def guarded(request: Any, context: _Context) -> Any:
        try:
            return await behavior(request, context)
        except Exception as exc:
            await _abort(context, exc, method)

    return guarded


def _guard_stream(behavior: StreamBehavior, method: str) -> StreamBehavior:
    async def guarded(request: Any, context: _Context) -> AsyncIterator[Any]:
        try:
            async for response in behavior(request, context):
                yield response
        except Exception as exc:
            await _abort(context, exc, method)

    return guarded


async def _abort(context: _Context, exc: Exception, method: str) -> NoReturn:
    if isinstance(exc, grpc.aio.AbortError):
        raise exc  # the handler already chose its status
    if isinstance(exc, grpc.aio.AioRpcError):
        # An upstream service's typed error passes through with its code and details, so a
        # NOT_FOUND or UNAVAILABLE from storage reaches the client as exactly that.
        exc = error_from_rpc(exc)
    if isinstance(exc, DomainError):
        logger.debug("%s failed: %s (%s)", method, exc.message, exc.reason)
        await abort_with(context, exc)
    incident = uuid.uuid4().hex[:16]
    logger.error(
        "unhandled exception in %s",
        method,
        exc_info=exc,
        extra={"rpc_method": method, "incident_id": incident},
    )
    await abort_with(context, Internal("internal error", metadata={"incident_id": incident}))
