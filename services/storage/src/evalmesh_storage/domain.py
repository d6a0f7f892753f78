"""The storage domain: evaluations, output and API keys as plain values.

Enum numbers equal the wire enums of ``evalmesh.v1`` so the servicer edge translates by value and
stored integers keep their meaning. Times are integer microseconds since the Unix epoch (UTC),
always read from the database clock; durations are integer microseconds.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Generic, TypeVar

from evalmesh_common.states import TERMINAL_STATES, State

__all__ = [
    "DEFAULT_MAX_OUTPUT_BYTES",
    "TERMINAL_STATES",
    "Activity",
    "ActivityBucket",
    "ApiKey",
    "AppliedLimits",
    "Chunk",
    "CreatedApiKey",
    "Evaluation",
    "Fault",
    "Limits",
    "OutputProgress",
    "Page",
    "Priority",
    "QueueDepth",
    "Result",
    "Role",
    "RunTimings",
    "Spec",
    "State",
    "Stats",
    "Stream",
    "TenantShare",
    "TerminationCause",
    "View",
    "WaitSummary",
]

T = TypeVar("T")

DEFAULT_MAX_OUTPUT_BYTES = 1024 * 1024
"""The per-stream cap when neither the applied nor the requested limits name one."""


class Priority(IntEnum):
    """Scheduling class; a smaller number runs first (``evalmesh.v1.Priority``)."""

    HIGH = 1
    NORMAL = 2
    LOW = 3


class Stream(IntEnum):
    """An output stream (``evalmesh.v1.OutputStream``)."""

    STDOUT = 1
    STDERR = 2


class Role(IntEnum):
    """What an API key may do (``evalmesh.v1.Role``)."""

    USER = 1
    ADMIN = 2


class Fault(IntEnum):
    """Which side caused the outcome (``evalmesh.v1.Fault``); 0 while not terminal."""

    UNSPECIFIED = 0
    NONE = 1
    USER = 2
    PLATFORM = 3


class TerminationCause(IntEnum):
    """Why an evaluation ended (``evalmesh.v1.TerminationCause``); 0 while not terminal."""

    UNSPECIFIED = 0
    EXITED = 1
    SIGNALED = 2
    WALL_TIMEOUT = 3
    MEMORY_LIMIT = 4
    OUTPUT_LIMIT = 5
    CANCELLED = 6
    PLATFORM_ERROR = 7
    MAX_ATTEMPTS = 8


class View(IntEnum):
    """How much of an evaluation a read returns."""

    BASIC = 1
    FULL = 2


@dataclass(frozen=True, slots=True)
class Limits:
    """Requested limits; ``None`` means "the operator's default"."""

    wall_timeout_us: int | None = None
    memory_bytes: int | None = None
    max_processes: int | None = None
    max_output_bytes: int | None = None
    cpu_millicores: int | None = None


@dataclass(frozen=True, slots=True)
class Spec:
    """What a client asked to run; immutable after creation."""

    code: str
    stdin: bytes = b""
    language: str = ""
    runtime: str = ""
    priority: Priority = Priority.NORMAL
    limits: Limits = field(default_factory=Limits)
    labels: Mapping[str, str] = field(default_factory=dict)

    def fingerprint(self) -> str:
        """Return the sha256 of a deterministic serialisation, to detect request_id reuse."""
        document: dict[str, Any] = {
            "code": self.code,
            "stdin": base64.b64encode(self.stdin).decode("ascii"),
            "language": self.language,
            "runtime": self.runtime,
            "priority": int(self.priority),
            "limits": {
                "wall_timeout_us": self.limits.wall_timeout_us,
                "memory_bytes": self.limits.memory_bytes,
                "max_processes": self.limits.max_processes,
                "max_output_bytes": self.limits.max_output_bytes,
                "cpu_millicores": self.limits.cpu_millicores,
            },
            "labels": dict(sorted(self.labels.items())),
        }
        canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class AppliedLimits:
    """The limits a sandbox enforced, every default resolved."""

    wall_timeout_us: int = 0
    memory_bytes: int = 0
    max_processes: int = 0
    max_output_bytes: int = 0
    cpu_millicores: int = 0
    scratch_bytes: int = 0


@dataclass(frozen=True, slots=True)
class TenantShare:
    """How many evaluations one tenant may run at once (0: no bound); see ``tenant_share``."""

    max_running: int = 0
    fair_running: int = 0
    ending: tuple[str, ...] = ()  # the claimer's runs whose sandbox is gone: no place held


@dataclass(frozen=True, slots=True)
class OutputProgress:
    """How much of each stream is stored: the gapless prefix, and whether a cap was hit."""

    stdout_bytes: int = 0
    stderr_bytes: int = 0
    stdout_truncated: bool = False
    stderr_truncated: bool = False


@dataclass(frozen=True, slots=True)
class Result:
    """What the sandbox observed; output sizes and flags live in :class:`OutputProgress`."""

    cause: TerminationCause = TerminationCause.UNSPECIFIED
    fault: Fault = Fault.UNSPECIFIED
    exit_code: int | None = None
    signal: int | None = None
    detail: str = ""
    wall_time_us: int | None = None
    cpu_time_us: int | None = None
    peak_memory_bytes: int = 0
    stdout_truncated: bool = False
    stderr_truncated: bool = False


@dataclass(frozen=True, slots=True)
class RunTimings:
    """Moments of one run in microseconds after its claim's answer reached the executor, on
    the executor's monotonic clock; None where it measured nothing (output_stored: the last
    bytes travel with the result)."""

    sandbox_ready_us: int | None = None
    program_ended_us: int | None = None
    output_stored_us: int | None = None


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of one output stream at a known byte offset."""

    stream: Stream
    sequence: int
    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Evaluation:
    """An evaluation as the system of record holds it.

    In the BASIC view ``spec.code`` and ``spec.stdin`` are empty and ``stdout``/``stderr`` are
    ``None``; in the FULL view the output is the stored gapless prefix of each stream.
    """

    id: str
    tenant: str
    request_id: str
    spec: Spec
    state: State
    attempt: int
    executor_id: str
    runtime_digest: str
    applied_limits: AppliedLimits | None
    result: Result | None
    progress: OutputProgress
    create_time: int
    start_time: int | None
    end_time: int | None
    lease_expire_time: int | None
    publish_time: int | None
    publish_count: int
    cancel_requested: bool
    cancel_reason: str
    stdout: bytes | None = None
    stderr: bytes | None = None
    queue_position: int | None = None
    estimated_start_time: int | None = None
    run_start_time: int | None = None
    run_end_time: int | None = None
    output_stored_time: int | None = None

    @property
    def runtime(self) -> str:
        """The runtime that ran the latest attempt; empty while never claimed."""
        return (self.spec.runtime or "python") if self.attempt > 0 else ""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key's public description; the secret is never stored."""

    id: str
    tenant: str
    role: Role
    display_name: str
    prefix: str
    create_time: int
    revoke_time: int | None


@dataclass(frozen=True, slots=True)
class CreatedApiKey:
    """A new key together with its secret, which is returned this once only."""

    key: ApiKey
    secret: str


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing; ``next_page_token`` is empty on the last page."""

    items: list[T]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """The backlog of one priority class."""

    priority: Priority
    depth: int
    oldest_wait_us: int


@dataclass(frozen=True, slots=True)
class Stats:
    """Counts for dashboards."""

    state_counts: dict[State, int]
    queued: list[QueueDepth]
    completed_last_minute: int


@dataclass(frozen=True, slots=True)
class WaitSummary:
    """Percentiles of queue waits (create to claim), in microseconds, over ``count`` waits."""

    count: int
    p50_us: int
    p90_us: int
    p99_us: int
    max_us: int


@dataclass(frozen=True, slots=True)
class ActivityBucket:
    """One interval of an :class:`Activity` window."""

    start_time: int
    completed: int
    started: int
    wait: WaitSummary | None


@dataclass(frozen=True, slots=True)
class Activity:
    """Throughput and queue waits over ``[start_time, end_time)`` in equal buckets."""

    start_time: int
    end_time: int
    bucket_us: int
    buckets: list[ActivityBucket]
    completed: int
    started: int
    wait: WaitSummary | None
