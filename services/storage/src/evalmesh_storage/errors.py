"""Storage's domain errors: the shared classes with stable storage ``reason`` values.

Each is a subclass of an :mod:`evalmesh_common.errors` class, so the shared interceptor maps it
to the right gRPC code with an ``ErrorInfo`` carrying the reason below.
"""

from __future__ import annotations

from evalmesh_common.errors import (
    Aborted,
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

__all__ = [
    "Aborted",
    "AlreadyClaimed",
    "AlreadyTerminal",
    "ApiKeyNotFound",
    "DomainError",
    "EvaluationNotFound",
    "FieldViolation",
    "InvalidApiKey",
    "InvalidArgument",
    "InvalidPageToken",
    "LeaseNotExpired",
    "RequestIdReused",
    "SchemaAheadError",
    "SchemaMismatchError",
    "StaleAttempt",
    "TenantAtLimit",
    "Unavailable",
    "invalid",
]


class EvaluationNotFound(NotFound):
    """No evaluation has this id in the caller's tenant (another tenant's looks the same)."""

    default_reason = "EVALUATION_NOT_FOUND"


class ApiKeyNotFound(NotFound):
    """No API key has this id."""

    default_reason = "API_KEY_NOT_FOUND"


class RequestIdReused(AlreadyExists):
    """The tenant's request_id already created an evaluation with a different spec."""

    default_reason = "REQUEST_ID_REUSED"


class StaleAttempt(FailedPrecondition):
    """A write carried an attempt that no longer holds the evaluation."""

    default_reason = "STALE_ATTEMPT"


class AlreadyTerminal(FailedPrecondition):
    """The evaluation is terminal; terminal states never change."""

    default_reason = "ALREADY_TERMINAL"


class AlreadyClaimed(FailedPrecondition):
    """A claim found the evaluation RUNNING under another claim."""

    default_reason = "ALREADY_CLAIMED"


class TenantAtLimit(ResourceExhausted):
    """A claim would take the tenant past its share of the pool; the job waits its turn."""

    default_reason = "TENANT_AT_LIMIT"


class LeaseNotExpired(FailedPrecondition):
    """A requeue found the attempt's lease still valid on the database clock."""

    default_reason = "LEASE_NOT_EXPIRED"


class InvalidPageToken(InvalidArgument):
    """A page token is malformed, forged, or from another tenant or other filters."""

    default_reason = "INVALID_PAGE_TOKEN"


class InvalidApiKey(Unauthenticated):
    """The presented secret belongs to no key, or to a revoked one."""

    default_reason = "INVALID_API_KEY"


class SchemaMismatchError(RuntimeError):
    """The database schema is not the one this code was built for; it must not serve."""


class SchemaAheadError(SchemaMismatchError):
    """The database schema is newer than this code knows; serving it could corrupt data."""


def invalid(field: str, description: str) -> InvalidArgument:
    """Return an INVALID_ARGUMENT error naming one field and what is wrong with it."""
    return InvalidArgument(f"invalid {field}: {description}", [FieldViolation(field, description)])
