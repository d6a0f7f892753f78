"""The one mapping between domain errors and gRPC statuses with ``google.rpc`` details.

Servers turn a :class:`~evalmesh_common.errors.DomainError` into a status code plus a
``google.rpc.Status`` in the ``grpc-status-details-bin`` trailer (``ErrorInfo`` always,
``BadRequest`` for invalid arguments, ``RetryInfo`` when a retry delay is known). Clients
decode that trailer back into the same typed error with :func:`error_from_rpc`, so a service
calling another can re-raise what it was told.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NoReturn

import grpc
import grpc.aio
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from evalmesh_common.errors import (
    DOMAIN,
    Aborted,
    AlreadyExists,
    Cancelled,
    DeadlineExceeded,
    DomainError,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

__all__ = ["abort_with", "error_from_rpc", "status_code_for", "to_grpc_status", "to_rpc_status"]

_DETAILS_KEY = "grpc-status-details-bin"

_CODE_BY_ERROR: dict[type[DomainError], grpc.StatusCode] = {
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    Aborted: grpc.StatusCode.ABORTED,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    Cancelled: grpc.StatusCode.CANCELLED,
    Internal: grpc.StatusCode.INTERNAL,
    DomainError: grpc.StatusCode.UNKNOWN,
}

# Codes with no domain class of their own decode to the nearest one a caller acts on the same way.
_ERROR_BY_CODE: dict[grpc.StatusCode, type[DomainError]] = {
    **{code: cls for cls, code in _CODE_BY_ERROR.items() if cls is not DomainError},
    grpc.StatusCode.UNKNOWN: Internal,
    grpc.StatusCode.DATA_LOSS: Internal,
    grpc.StatusCode.UNIMPLEMENTED: Internal,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
}


def status_code_for(error: DomainError) -> grpc.StatusCode:
    """Return the gRPC status code for ``error``, honouring subclasses of the domain classes."""
    for cls in type(error).__mro__:
        if cls in _CODE_BY_ERROR:
            return _CODE_BY_ERROR[cls]
    return grpc.StatusCode.UNKNOWN


def to_rpc_status(error: DomainError) -> status_pb2.Status:
    """Build the ``google.rpc.Status`` (code, message, typed details) describing ``error``."""
    code = status_code_for(error)
    return status_pb2.Status(
        code=code.value[0], message=error.message, details=[_pack(d) for d in _details(error)]
    )


def to_grpc_status(error: DomainError) -> grpc.Status:
    """Return a ``grpc.Status`` whose trailer carries :func:`to_rpc_status` of ``error``."""
    status: grpc.Status = rpc_status.to_status(to_rpc_status(error))
    return status


async def abort_with(context: grpc.aio.ServicerContext[Any, Any], error: DomainError) -> NoReturn:
    """Abort the current RPC with ``error``'s code, message and ``google.rpc`` details."""
    status = to_grpc_status(error)
    await context.abort(status.code, status.details, status.trailing_metadata)


def error_from_rpc(exc: grpc.RpcError) -> DomainError:
    """Decode a failed call (``grpc.aio.AioRpcError`` or a sync ``grpc.RpcError``) into a
    typed :class:`DomainError`, keeping reason, domain, metadata, violations and retry delay.

    Use it as ``raise error_from_rpc(exc) from exc`` so the remote cause stays attached.
    """
    code = _code_of(exc)
    message = exc.details() or code.name
    status = _rich_status(exc.trailing_metadata())
    info = _unpack(status, error_details_pb2.ErrorInfo) if status else None
    options: dict[str, Any] = {
        "reason": info.reason if info and info.reason else code.name,
        "metadata": dict(info.metadata) if info else None,
        "domain": info.domain if info else "",
    }
    cls = _ERROR_BY_CODE.get(code, Internal)
    if issubclass(cls, InvalidArgument):
        return cls(message, _violations(status), **options)
    if issubclass(cls, ResourceExhausted):
        return cls(message, retry_after=_retry_after(status), **options)
    return cls(message, **options)


def _details(error: DomainError) -> list[Any]:
    details: list[Any] = [
        error_details_pb2.ErrorInfo(
            reason=error.reason, domain=error.domain or DOMAIN, metadata=error.metadata
        )
    ]
    if isinstance(error, InvalidArgument) and error.violations:
        details.append(_bad_request(error.violations))
    if isinstance(error, ResourceExhausted) and error.retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(round(error.retry_after * 1e9))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    return details


def _bad_request(violations: Iterable[FieldViolation]) -> error_details_pb2.BadRequest:
    return error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in violations
        ]
    )


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _code_of(exc: grpc.RpcError) -> grpc.StatusCode:
    # A sync RpcError that is not also a Call (e.g. a channel error) has no code() method.
    code = getattr(exc, "code", None)
    return code() if callable(code) else grpc.StatusCode.UNKNOWN


def _rich_status(trailing: Iterable[Any] | None) -> status_pb2.Status | None:
    for key, value in trailing or ():
        if key == _DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except Exception:  # a peer sent garbage; the status code alone still decodes
                return None
    return None


def _unpack(status: status_pb2.Status, kind: Any) -> Any:
    for detail in status.details:
        if detail.Is(kind.DESCRIPTOR):
            message = kind()
            detail.Unpack(message)
            return message
    return None


def _violations(status: status_pb2.Status | None) -> list[FieldViolation]:
    request = _unpack(status, error_details_pb2.BadRequest) if status else None
    if request is None:
        return []
    return [FieldViolation(v.field, v.description) for v in request.field_violations]


def _retry_after(status: status_pb2.Status | None) -> float | None:
    info = _unpack(status, error_details_pb2.RetryInfo) if status else None
    if info is None or not info.HasField("retry_delay"):
        return None
    return float(info.retry_delay.ToNanoseconds()) / 1e9
