"""The scheduler's settings, from environment variables only (documented in ``docs/queues.md``)."""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass

from evalmesh_common import Seconds, env_field, env_group
from evalmesh_common.server import ServerConfig

__all__ = ["LoopConfig", "QueueConfig", "SchedulerConfig", "default_instance_id"]

MIB = 1024 * 1024


def default_instance_id() -> str:
    """A name for this process that no other replica shares: host plus a random suffix."""
    return f"scheduler-{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class QueueConfig:
    """The JetStream topology: limits and delivery settings of the work queue and its helpers."""

    # 1 on one host; 3 with an R3 cluster, so a node can be lost without losing queued work.
    replicas: int = env_field("EVALMESH_JETSTREAM_REPLICAS", default=1)
    # Submits are refused (RESOURCE_EXHAUSTED) once this many jobs are in the work queue.
    max_jobs: int = env_field("EVALMESH_QUEUE_MAX_JOBS", default=100_000)
    # Hard byte bound of the work-queue stream; the stream refuses (discard new) beyond it.
    max_bytes: int = env_field("EVALMESH_QUEUE_MAX_BYTES", default=256 * MIB)
    duplicate_window: Seconds = env_field("EVALMESH_QUEUE_DUPLICATE_WINDOW", default=Seconds(120))
    # Unacknowledged for this long, a job is redelivered; executors heartbeat with in_progress().
    ack_wait: Seconds = env_field("EVALMESH_QUEUE_ACK_WAIT", default=Seconds(30))
    max_deliver: int = env_field("EVALMESH_QUEUE_MAX_DELIVER", default=5)
    # Jobs handed out and not yet acknowledged, per priority consumer (bounds in-flight work).
    max_ack_pending: int = env_field("EVALMESH_QUEUE_MAX_ACK_PENDING", default=1_000)
    dead_letter_max_age: Seconds = env_field(
        "EVALMESH_DEAD_LETTER_MAX_AGE", default=Seconds(14 * 24 * 3600)
    )
    dead_letter_max_msgs: int = env_field("EVALMESH_DEAD_LETTER_MAX_MSGS", default=100_000)
    # Executors put their heartbeat every few seconds; an entry this old has vanished.
    executors_ttl: Seconds = env_field("EVALMESH_EXECUTORS_TTL", default=Seconds(15))
    leader_ttl: Seconds = env_field("EVALMESH_LEADER_TTL", default=Seconds(10))
    # 0 disables the cap; otherwise a tenant with this many QUEUED evaluations is refused.
    tenant_max_queued: int = env_field("EVALMESH_TENANT_MAX_QUEUED", default=10_000)

    def __post_init__(self) -> None:
        if self.replicas not in (1, 3, 5):
            raise ValueError("EVALMESH_JETSTREAM_REPLICAS must be 1, 3 or 5")
        for name in ("max_jobs", "max_bytes", "max_deliver", "max_ack_pending"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("duplicate_window", "ack_wait", "executors_ttl", "leader_ttl"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.tenant_max_queued < 0:
            raise ValueError("tenant_max_queued must not be negative")

    @property
    def stream_max_msgs(self) -> int:
        """The stream's hard message bound: the admission limit plus headroom.

        Admission keeps submits under ``max_jobs``; the headroom absorbs concurrent admissions
        and lets the reconciler and reaper re-publish already accepted work into a full queue.
        """
        return self.max_jobs + max(self.max_jobs // 10, 16)


@dataclass(frozen=True)
class LoopConfig:
    """The background loops: reconciler, reaper, dead-letter handler, retention."""

    reconcile_interval: Seconds = env_field("EVALMESH_RECONCILE_INTERVAL", default=Seconds(5))
    # A QUEUED evaluation published longer ago than this is checked (and re-published if its job
    # is missing from the queue); never-published ones at the first pass after they are
    # presence_check_after old (younger, their submit may be publishing them). Each check
    # of a waiting job is a publish attempt and a row update, so keep it well above a normal wait.
    reconcile_after: Seconds = env_field("EVALMESH_RECONCILE_AFTER", default=Seconds(300))
    # A QUEUED evaluation published longer ago than this has its job looked up on the work queue
    # (a lookup, not a publish or a write) and published again at once if it is gone.
    presence_check_after: Seconds = env_field("EVALMESH_PRESENCE_CHECK_AFTER", default=Seconds(5))
    reap_interval: Seconds = env_field("EVALMESH_REAP_INTERVAL", default=Seconds(5))
    # Attempts (claims) an evaluation may lose to platform faults before it ends ERROR.
    max_attempts: int = env_field("EVALMESH_MAX_ATTEMPTS", default=3)
    # A requeued job is re-published after ~base * 2**(attempts lost - 1), jittered, capped.
    requeue_backoff_base: Seconds = env_field("EVALMESH_REQUEUE_BACKOFF_BASE", default=Seconds(2))
    requeue_backoff_cap: Seconds = env_field("EVALMESH_REQUEUE_BACKOFF_CAP", default=Seconds(60))
    batch_limit: int = env_field("EVALMESH_RECONCILE_BATCH", default=500)
    topology_check_interval: Seconds = env_field(
        "EVALMESH_TOPOLOGY_CHECK_INTERVAL", default=Seconds(30)
    )
    # Terminal evaluations that ended longer ago than this are deleted with their output by the
    # leader's retention pass, every retention_interval; 0 keeps everything.
    retention_age: Seconds = env_field("EVALMESH_RETENTION_AGE", default=Seconds(30 * 86_400))
    retention_interval: Seconds = env_field("EVALMESH_RETENTION_INTERVAL", default=Seconds(600))

    def __post_init__(self) -> None:
        for name in (
            "reconcile_interval",
            "reconcile_after",
            "presence_check_after",
            "reap_interval",
            "retention_interval",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if not 0 < self.requeue_backoff_base <= self.requeue_backoff_cap:
            raise ValueError("need 0 < requeue_backoff_base <= requeue_backoff_cap")
        if self.retention_age < 0:
            raise ValueError("retention_age must not be negative (0 keeps everything)")
        if self.max_attempts < 1 or self.batch_limit < 1:
            raise ValueError("max_attempts and batch_limit must be at least 1")


@dataclass(frozen=True)
class SchedulerConfig:
    """Where the scheduler listens, where its dependencies are, and its queue policies."""

    server: ServerConfig = env_group(ServerConfig)
    queue: QueueConfig = env_group(QueueConfig)
    loops: LoopConfig = env_group(LoopConfig)
    nats_url: str = env_field("EVALMESH_NATS_URL")
    storage_address: str = env_field("EVALMESH_STORAGE_ADDRESS")
    # Deadline of each call to the storage service.
    storage_timeout: Seconds = env_field("EVALMESH_STORAGE_TIMEOUT", default=Seconds(5))
    # Deadline of each JetStream request (publish acknowledgement, stream info, ...).
    nats_timeout: Seconds = env_field("EVALMESH_NATS_TIMEOUT", default=Seconds(5))
    max_batch: int = env_field("EVALMESH_MAX_BATCH", default=1_000)
    instance_id: str = env_field("EVALMESH_INSTANCE_ID", default="")
    # Fault injection for tests only: exit(137) right after the storage commit of a submit,
    # before the publish, as a kill -9 at the worst moment would (HOSTILE.md F03).
    test_crash_after_commit: bool = env_field("EVALMESH_TEST_CRASH_AFTER_COMMIT", default=False)
