"""Domain errors shared by every evalmesh service.

Domain code raises these; it never imports grpc. The one mapping to gRPC status codes and
``google.rpc.Status`` details lives in :mod:`evalmesh_common.server.status`, so a repository can say
``raise NotFound(...)`` and the servicer edge turns it into ``NOT_FOUND`` with an ``ErrorInfo``.
"""

# The class names mirror the gRPC status codes they map to (NotFound -> NOT_FOUND), which
# reads better at raise sites than a uniform "Error" suffix.
# ruff: noqa: N818

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

__all__ = [
    "DOMAIN",
    "Aborted",
    "AlreadyExists",
    "Cancelled",
    "DeadlineExceeded",
    "DomainError",
    "FailedPrecondition",
    "FieldViolation",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
]

DOMAIN = "evalmesh.dev"
"""The ``ErrorInfo.domain`` of every error evalmesh itself raises."""


class DomainError(Exception):
    """An expected failure with a stable, machine-readable ``reason``.

    ``reason`` is UPPER_SNAKE_CASE and part of the API contract (AIP-193): clients branch on
    it, so change it only as you would change a proto field. ``metadata`` holds short
    string facts that help a caller act on the error (e.g. ``{"evaluation": "ev_123"}``).
    """

    default_reason: ClassVar[str] = "UNKNOWN"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        domain: str = DOMAIN,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata: dict[str, str] = dict(metadata or {})
        self.domain = domain

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, reason={self.reason!r})"


class NotFound(DomainError):
    """The resource does not exist, or the caller's tenant may not know it does."""

    default_reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    """The resource the caller tried to create already exists."""

    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    """The system is not in the state the operation needs (e.g. evaluation is terminal)."""

    default_reason = "FAILED_PRECONDITION"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid request field: ``field`` is a path like ``limits.timeout``."""

    field: str
    description: str


class InvalidArgument(DomainError):
    """The request is malformed; ``violations`` names every offending field and its bound."""

    default_reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str,
        violations: Sequence[FieldViolation] = (),
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        domain: str = DOMAIN,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata, domain=domain)
        self.violations: tuple[FieldViolation, ...] = tuple(violations)


class ResourceExhausted(DomainError):
    """A quota or rate limit was hit; ``retry_after`` (seconds) says when to try again."""

    default_reason = "RESOURCE_EXHAUSTED"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        domain: str = DOMAIN,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata, domain=domain)
        self.retry_after = retry_after


class Unavailable(DomainError):
    """A dependency cannot be reached right now; the caller may retry with backoff."""

    default_reason = "UNAVAILABLE"


class PermissionDenied(DomainError):
    """The caller is known but may not do this."""

    default_reason = "PERMISSION_DENIED"


class Unauthenticated(DomainError):
    """The caller presented no valid credentials."""

    default_reason = "UNAUTHENTICATED"


class Aborted(DomainError):
    """A concurrency conflict (e.g. a fenced compare-and-set lost); retry the whole sequence."""

    default_reason = "ABORTED"


class DeadlineExceeded(DomainError):
    """The operation did not finish in the time it was given."""

    default_reason = "DEADLINE_EXCEEDED"


class Cancelled(DomainError):
    """The operation was cancelled, usually by the caller."""

    default_reason = "CANCELLED"


class Internal(DomainError):
    """A platform fault. Raised by :func:`error_from_rpc` for INTERNAL-like remote statuses."""

    default_reason = "INTERNAL"
