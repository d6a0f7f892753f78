"""Typed views of the cluster and API-key messages (admin calls)."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from enum import StrEnum

from evalmesh.client._models import Priority, State, duration, timestamp
from evalmesh.v1 import api_key_pb2, cluster_pb2

__all__ = ["ApiKey", "CreatedApiKey", "Executor", "PriorityQueue", "QueueStats", "Role", "Runtime"]


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
            proto=message,
        )


@dataclasses.dataclass(frozen=True)
class Runtime:
    """A named sandbox image evaluations can run in."""

    name: str
    description: str
    language: str
    version: str
    digests: list[str]
    executor_count: int
    proto: cluster_pb2.Runtime = dataclasses.field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, message: cluster_pb2.Runtime) -> Runtime:
        """Wrap an ``evalmesh.v1.Runtime``."""
        return cls(
            name=message.name,
            description=message.description,
            language=message.language,
            version=message.version,
            digests=list(message.digests),
            executor_count=message.executor_count,
            proto=message,
        )
