"""Typed views of the cluster and API-key messages (admin calls)."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from enum import StrEnum

from evalmesh.client._models import Evaluation, Priority, State, duration, timestamp
from evalmesh.v1 import api_key_pb2, cluster_pb2, cluster_service_pb2

__all__ = [
    "ActivityBucket",
    "ApiKey",
    "CreatedApiKey",
    "DeadLetter",
    "Executor",
    "PriorityQueue",
    "PurgeResult",
    "QueueActivity",
    "QueueStats",
    "Role",
    "Runtime",
    "WaitSummary",
]


class Role(StrEnum):
    """What an API key may do: USER manages its tenant's evaluations; ADMIN also the cluster."""

    USER = "USER"
    ADMIN = "ADMIN"

    @classmethod
    def parse(cls, value: Role | str) -> Role:
        """Accept a Role or its name in any case."""
        try:
            return cls(str(value).strip().upper().removeprefix("ROLE_"))
        except ValueError:
            raise ValueError(f"unknown role {value!r}: use user or admin") from None

    def to_proto(self) -> api_key_pb2.Role.ValueType:
        """The ``Role`` number."""
        return api_key_pb2.Role.Value(f"ROLE_{self.value}")


@dataclasses.dataclass(frozen=True)
class ApiKey:
    """An API key's description; the secret itself is only ever in :class:`CreatedApiKey`."""

    id: str
    tenant: str
    role: Role
    name: str
    prefix: str
    create_time: datetime | None
    revoke_time: datetime | None
    proto: api_key_pb2.ApiKey = dataclasses.field(repr=False, compare=False)

    @property
    def revoked(self) -> bool:
        """True once the key was revoked."""
        return self.revoke_time is not None

    @classmethod
    def from_proto(cls, message: api_key_pb2.ApiKey) -> ApiKey:
        """Wrap an ``evalmesh.v1.ApiKey``."""
        role = Role.ADMIN if message.role == api_key_pb2.ROLE_ADMIN else Role.USER
        return cls(
            id=message.id,
            tenant=message.tenant,
            role=role,
            name=message.display_name,
            prefix=message.prefix,
            create_time=timestamp(message, "create_time"),
            revoke_time=timestamp(message, "revoke_time"),
            proto=message,
        )


@dataclasses.dataclass(frozen=True)
class CreatedApiKey:
    """A new key and its secret, the only time the secret is shown."""

    key: ApiKey
    secret: str = dataclasses.field(repr=False)


@dataclasses.dataclass(frozen=True)
class PriorityQueue:
    """The backlog of one priority class."""

    priority: Priority
    depth: int
    oldest_wait: timedelta | None


@dataclasses.dataclass(frozen=True)
class QueueStats:
    """A snapshot of the queue and of the work in flight."""

    priorities: list[PriorityQueue]
    running: int
    completed_per_minute: float
    state_counts: dict[State, int]
    dead_letters: int
    observe_time: datetime | None
    proto: cluster_pb2.QueueStats = dataclasses.field(repr=False, compare=False)

    def depth(self, priority: Priority | str) -> int:
        """How many evaluations of ``priority`` wait to start."""
        wanted = Priority.parse(priority)
        return sum(queue.depth for queue in self.priorities if queue.priority is wanted)

    @classmethod
    def from_proto(cls, message: cluster_pb2.QueueStats) -> QueueStats:
        """Wrap an ``evalmesh.v1.QueueStats``."""
        return cls(
            priorities=[
                PriorityQueue(
                    Priority.from_proto(item.priority), item.depth, duration(item, "oldest_wait")
                )
                for item in message.priorities
            ],
            running=message.running,
            completed_per_minute=message.completed_per_minute,
            state_counts={State.from_proto(c.state): c.count for c in message.state_counts},
            dead_letters=message.dead_letters,
            observe_time=timestamp(message, "observe_time"),
            proto=message,
        )


@dataclasses.dataclass(frozen=True)
class Executor:
    """One executor-pool instance and its slots."""

    id: str
    host: str
    backend: str
    slots: int
    busy_slots: int
    running_evaluation_ids: list[str]
    runtimes: list[str]
    healthy: bool
    unhealthy_reason: str
    start_time: datetime | None
    heartbeat_time: datetime | None
    completed: int
    draining: bool
    proto: cluster_pb2.Executor = dataclasses.field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, message: cluster_pb2.Executor) -> Executor:
        """Wrap an ``evalmesh.v1.Executor``."""
        return cls(
            id=message.id,
            host=message.host,
            backend=message.backend,
            slots=message.slots,
            busy_slots=message.busy_slots,
            running_evaluation_ids=list(message.running_evaluation_ids),
            runtimes=list(message.runtimes),
            healthy=message.healthy,
            unhealthy_reason=message.unhealthy_reason,
            start_time=timestamp(message, "start_time"),
            heartbeat_time=timestamp(message, "heartbeat_time"),
            completed=message.completed,
            draining=message.draining,
            proto=message,
        )


@dataclasses.dataclass(frozen=True)
class Runtime:
    """A named sandbox image evaluations can run in.

    ``packages`` maps each installed distribution beyond the standard library to its version
    (versions joined by ", " while executors disagree, as during a rollout).
    """

    name: str
    description: str
    language: str
    version: str
    digests: list[str]
    executor_count: int
    packages: dict[str, str]
    proto: cluster_pb2.Runtime = dataclasses.field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, message: cluster_pb2.Runtime) -> Runtime:
        """Wrap an ``evalmesh.v1.Runtime``."""
        packages: dict[str, list[str]] = {}
        for package in message.packages:
            packages.setdefault(package.name, []).append(package.version)
        return cls(
            name=message.name,
            description=message.description,
            language=message.language,
            version=message.version,
            digests=list(message.digests),
            executor_count=message.executor_count,
            packages={name: ", ".join(versions) for name, versions in packages.items()},
            proto=message,
        )


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """A job that exhausted its deliveries, set aside for inspection and redrive (admin).

    ``evaluation`` (BASIC view) is filled only by :meth:`Client.dead_letter`, and stays None
    once the evaluation was purged.
    """

    sequence: int
    evaluation_id: str
    tenant: str
    priority: Priority
    deliveries: int
    reason: str
    dead_time: datetime | None
    evaluation: Evaluation | None
    proto: cluster_pb2.DeadLetter = dataclasses.field(repr=False, compare=False)

    @classmethod
    def from_proto(
        cls, message: cluster_pb2.DeadLetter, evaluation: Evaluation | None = None
    ) -> DeadLetter:
        """Wrap an ``evalmesh.v1.DeadLetter``."""
        return cls(
            sequence=message.sequence,
            evaluation_id=message.evaluation_id,
            tenant=message.tenant,
            priority=Priority.from_proto(message.priority),
            deliveries=message.deliveries,
            reason=message.reason,
            dead_time=timestamp(message, "dead_time"),
            evaluation=evaluation,
            proto=message,
        )


@dataclasses.dataclass(frozen=True)
class WaitSummary:
    """Queue waits (acceptance to claim): how many, and their percentiles."""

    count: int
    p50: timedelta
    p90: timedelta
    p99: timedelta
    max: timedelta

    @classmethod
    def from_proto(cls, message: cluster_pb2.WaitSummary) -> WaitSummary:
        """Wrap an ``evalmesh.v1.WaitSummary``."""
        return cls(
            message.count,
            message.p50.ToTimedelta(),
            message.p90.ToTimedelta(),
            message.p99.ToTimedelta(),
            message.max.ToTimedelta(),
        )


def _wait(message: cluster_pb2.ActivityBucket | cluster_pb2.QueueActivity) -> WaitSummary | None:
    return WaitSummary.from_proto(message.wait) if message.HasField("wait") else None


@dataclasses.dataclass(frozen=True)
class ActivityBucket:
    """What happened in one interval of a :class:`QueueActivity` window."""

    start_time: datetime | None
    completed: int
    started: int
    wait: WaitSummary | None


@dataclasses.dataclass(frozen=True)
class QueueActivity:
    """Throughput and queue waits over a recent window, from the stored timestamps (admin)."""

    start_time: datetime | None
    end_time: datetime | None
    bucket_width: timedelta | None
    buckets: list[ActivityBucket]
    completed: int
    started: int
    wait: WaitSummary | None
    proto: cluster_pb2.QueueActivity = dataclasses.field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, message: cluster_pb2.QueueActivity) -> QueueActivity:
        """Wrap an ``evalmesh.v1.QueueActivity``."""
        return cls(
            start_time=timestamp(message, "start_time"),
            end_time=timestamp(message, "end_time"),
            bucket_width=duration(message, "bucket_width"),
            buckets=[
                ActivityBucket(
                    timestamp(bucket, "start_time"), bucket.completed, bucket.started, _wait(bucket)
                )
                for bucket in message.buckets
            ],
            completed=message.completed,
            started=message.started,
            wait=_wait(message),
            proto=message,
        )


@dataclasses.dataclass(frozen=True)
class PurgeResult:
    """What a purge deleted: terminal evaluations that ended before ``end_time_before``."""

    purged: int
    end_time_before: datetime | None

    @classmethod
    def add(
        cls, earlier: PurgeResult | None, reply: cluster_service_pb2.PurgeEvaluationsResponse
    ) -> PurgeResult:
        """The running total after one more PurgeEvaluations reply."""
        before = timestamp(reply, "end_time_before")
        return cls((earlier.purged if earlier else 0) + reply.purged, before)
