"""Checks and translations of the operators' ClusterService calls: drains, purges, activity.

Each turns a public request into the internal one (or raises InvalidArgument naming the field
and its bound), so the handlers stay two lines and the bounds are stated once.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from google.protobuf import duration_pb2, timestamp_pb2

from evalmesh.scheduler.v1 import scheduler_service_pb2
from evalmesh.storage.v1 import storage_service_pb2
from evalmesh.v1 import cluster_service_pb2
from evalmesh_common import FieldViolation, InvalidArgument

__all__ = [
    "ACTIVITY_BUCKETS",
    "MAX_DRAIN_GRACE",
    "activity_request",
    "drain_request",
    "purge_request",
]

# The executor's own id syntax (EVALMESH_INSTANCE_ID): letters, digits and - _ = . only.
_EXECUTOR_ID = re.compile(r"[A-Za-z0-9_=.-]{1,256}")
MAX_DRAIN_GRACE = timedelta(hours=1)
ACTIVITY_BUCKETS = 60
_WINDOW = (timedelta(minutes=1), timedelta(hours=24))
_DEFAULT_WINDOW = timedelta(hours=1)


def _invalid(field: str, description: str) -> InvalidArgument:
    return InvalidArgument(f"invalid {field}: {description}", [FieldViolation(field, description)])


def drain_request(
    request: cluster_service_pb2.DrainExecutorRequest,
) -> scheduler_service_pb2.DrainExecutorRequest:
    """The scheduler's drain request for a public one."""
    if not _EXECUTOR_ID.fullmatch(request.id):
        raise _invalid("id", "must be 1 to 256 of A-Z, a-z, 0-9, '-', '_', '=' and '.'")
    drain = scheduler_service_pb2.DrainExecutorRequest(id=request.id)
    if request.HasField("grace"):
        if not timedelta(0) <= request.grace.ToTimedelta() <= MAX_DRAIN_GRACE:
            raise _invalid("grace", "must be between 0 s and 1 h")
        drain.grace.CopyFrom(request.grace)
    return drain


def purge_request(
    request: cluster_service_pb2.PurgeEvaluationsRequest, now: datetime | None = None
) -> scheduler_service_pb2.PurgeEvaluationsRequest:
    """The scheduler's purge request: the cutoff ``older_than`` before now. Required, so a
    forgotten field never means "everything"."""
    if not request.HasField("older_than"):
        raise _invalid("older_than", "is required (0s purges every terminal evaluation)")
    age = request.older_than.ToTimedelta()
    if age < timedelta(0):
        raise _invalid("older_than", "must not be negative")
    cutoff = timestamp_pb2.Timestamp()
    cutoff.FromDatetime((now or datetime.now(UTC)) - age)
    return scheduler_service_pb2.PurgeEvaluationsRequest(end_time_before=cutoff)


def activity_request(
    request: cluster_service_pb2.GetQueueActivityRequest,
) -> storage_service_pb2.GetActivityRequest:
    """Storage's activity request: the window (default 1 h) in 60 buckets."""
    window = request.window.ToTimedelta() if request.HasField("window") else _DEFAULT_WINDOW
    if not _WINDOW[0] <= window <= _WINDOW[1]:
        raise _invalid("window", "must be between 1 minute and 24 hours")
    duration = duration_pb2.Duration()
    duration.FromTimedelta(window)
    return storage_service_pb2.GetActivityRequest(window=duration, buckets=ACTIVITY_BUCKETS)
