"""Typed exceptions decoded from a failed call's status and its ``google.rpc.Status`` details.

The gateway puts a ``google.rpc.Status`` in the ``grpc-status-details-bin`` trailer: ``ErrorInfo``
(a stable reason) always, ``BadRequest`` (field violations) for invalid input, ``RetryInfo`` when
it knows how long to wait. :func:`error_from_rpc` turns that into one exception class per status
code, so callers write ``except NotFoundError`` rather than comparing codes.
"""

from __future__ import annotations

from typing import Any, NamedTuple, cast

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

__all__ = [
    "AbortedError",
    "AlreadyExistsError",
    "CancelledError",
    "ConfigurationError",
    "DeadlineExceededError",
    "EvalmeshError",
    "FailedPreconditionError",
    "FieldViolation",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitedError",
    "UnauthenticatedError",
    "UnavailableError",
    "error_from_rpc",
]


class FieldViolation(NamedTuple):
    """One invalid request field: ``field`` is a path such as ``spec.limits.wall_timeout``."""

    field: str
    description: str


class EvalmeshError(Exception):
    """Base of every error the client raises.

    ``code`` is the gRPC status code (``None`` for errors raised before any call, such as a missing
    address), ``reason`` a stable UPPER_SNAKE_CASE string to branch on, ``violations`` the invalid
    fields, ``retry_after`` the server's suggested wait in seconds, ``metadata`` extra facts.
    """

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        reason: str = "",
        violations: tuple[FieldViolation, ...] = (),
        retry_after: float | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.reason = reason or (code.name if code else "")
        self.violations = violations
        self.retry_after = retry_after
        self.metadata = dict(metadata or {})

    def __str__(self) -> str:
        if not self.violations:
            return self.message
        lines = [f"{v.field}: {v.description}" for v in self.violations]
        if len(lines) == 1:
            return f"invalid request: {lines[0]}"
        return "invalid request:\n  " + "\n  ".join(lines)

    def __repr__(self) -> str:
        code = self.code.name if self.code else None
        return f"{type(self).__name__}({self.message!r}, code={code}, reason={self.reason!r})"


class ConfigurationError(EvalmeshError):
    """No address or API key could be found, or a setting is malformed; nothing was sent."""


class InvalidArgumentError(EvalmeshError):
    """The request broke a bound; ``violations`` names each field and the bound it broke."""


class NotFoundError(EvalmeshError):
    """No such resource for this key's tenant; another tenant's looks exactly like a missing one."""


class AlreadyExistsError(EvalmeshError):
    """The request_id was already used with a different spec."""


class UnauthenticatedError(EvalmeshError):
    """The API key is missing, unknown or revoked."""


class PermissionDeniedError(EvalmeshError):
    """The API key is valid but may not do this (e.g. an admin call with a user key)."""


class RateLimitedError(EvalmeshError):
    """RESOURCE_EXHAUSTED: a rate limit, quota or size cap; ``retry_after`` says when to retry."""


class FailedPreconditionError(EvalmeshError):
    """The resource is not in a state that allows this call."""


class AbortedError(EvalmeshError):
    """A concurrency conflict; the whole operation may be retried."""


class UnavailableError(EvalmeshError):
    """The mesh could not be reached, or a dependency of it is down; retried with backoff."""


class DeadlineExceededError(EvalmeshError):
    """The call did not finish before its deadline."""


class CancelledError(EvalmeshError):
    """The call was cancelled before it finished."""


class InternalError(EvalmeshError):
    """The platform failed in an unexpected way."""


_ERROR_BY_CODE: dict[grpc.StatusCode, type[EvalmeshError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RateLimitedError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.ABORTED: AbortedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.CANCELLED: CancelledError,
}


def error_from_rpc(error: grpc.RpcError) -> EvalmeshError:
    """Decode a failed call (sync ``grpc.RpcError`` or ``grpc.aio.AioRpcError``) into its type.

    Raise it as ``raise error_from_rpc(error) from error`` so the gRPC error stays attached.
    """
    code = _code_of(error)
    message = _details_of(error) or code.name
    status = _rich_status(error)
    info = _unpack(status, error_details_pb2.ErrorInfo)
    cls = _ERROR_BY_CODE.get(code, InternalError)
    return cls(
        message,
        code=code,
        reason=info.reason if info is not None and info.reason else code.name,
        violations=_violations(status),
        retry_after=_retry_after(status),
        metadata=dict(info.metadata) if info is not None else None,
    )


def _code_of(error: grpc.RpcError) -> grpc.StatusCode:
    # A sync RpcError that is not also a Call (a channel failure) has no code().
    code = getattr(error, "code", None)
    value = code() if callable(code) else None
    return value if isinstance(value, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


def _details_of(error: grpc.RpcError) -> str:
    details = getattr(error, "details", None)
    value = details() if callable(details) else None
    return value if isinstance(value, str) else ""


def _rich_status(error: grpc.RpcError) -> status_pb2.Status | None:
    if not callable(getattr(error, "trailing_metadata", None)):
        return None
    try:
        status: status_pb2.Status | None = rpc_status.from_call(cast(grpc.Call, error))
    except ValueError:
        # The details disagree with the status line (a proxy rewrote one of them): the code
        # alone still decodes, and details a peer got wrong are better dropped than trusted.
        return None
    except Exception:  # a peer sent bytes that are not a google.rpc.Status
        return None
    return status


def _unpack(status: status_pb2.Status | None, kind: type[Any]) -> Any:
    for detail in status.details if status is not None else ():
        if detail.Is(kind.DESCRIPTOR):
            message = kind()
            detail.Unpack(message)
            return message
    return None


def _violations(status: status_pb2.Status | None) -> tuple[FieldViolation, ...]:
    request = _unpack(status, error_details_pb2.BadRequest)
    if request is None:
        return ()
    return tuple(FieldViolation(v.field, v.description) for v in request.field_violations)


def _retry_after(status: status_pb2.Status | None) -> float | None:
    info = _unpack(status, error_details_pb2.RetryInfo)
    if info is None or not info.HasField("retry_delay"):
        return None
    return float(info.retry_delay.ToNanoseconds()) / 1e9
