"""The names every service uses on NATS: streams, subjects, consumers and buckets.

The scheduler creates the JetStream topology (see ``docs/queues.md``); executors bind to it and the
gateway listens to live events. Keeping the names here means a rename cannot split the mesh.

Priorities map onto the public ``evalmesh.v1.Priority`` values by name (high, normal, low).
"""

from __future__ import annotations

__all__ = [
    "CANCEL_SUBJECT",
    "DEAD_LETTER_CONSUMER",
    "DEAD_LETTER_STREAM",
    "DRAIN_SUBJECT_PREFIX",
    "EXECUTORS_BUCKET",
    "JOBS_STREAM",
    "JOB_ADVISORIES_STREAM",
    "KEY_REVOKED_SUBJECT",
    "LEADER_BUCKET",
    "LEASES_RELEASED_SUBJECT",
    "PRIORITY_NAMES",
    "TENANT_USAGE_SUBJECT",
    "dead_letter_subject",
    "drain_subject",
    "event_subject",
    "job_consumer",
    "job_filter",
    "job_hint_subject",
    "job_message_subject",
    "job_priority",
    "max_deliveries_advisory_subject",
    "priority_name",
]

# Highest first: the order executors consider the classes in.
PRIORITY_NAMES = ("high", "normal", "low")

JOBS_STREAM = "EVALMESH_JOBS"
DEAD_LETTER_STREAM = "EVALMESH_DEAD_LETTERS"
# Core NATS (not JetStream): every executor listens; the one holding the evaluation stops it.
CANCEL_SUBJECT = "evalmesh.control.cancel"
# Core NATS: the id of a revoked API key, so every gateway drops it from its cache at once.
KEY_REVOKED_SUBJECT = "evalmesh.control.keys.revoked"
# Core NATS: each gateway's per-tenant admissions and open watches (``gateway.v1.GatewayUsage``),
# so every gateway enforces the tenant limits over the traffic of all of them.
TENANT_USAGE_SUBJECT = "evalmesh.control.tenants.usage"
# Core NATS: an executor restarted under its old identity ended its predecessor's leases (the
# payload is its instance id); the leading scheduler's reaper requeues them now, not next tick.
LEASES_RELEASED_SUBJECT = "evalmesh.control.leases.released"
# Core NATS: "jobs of this class are queued now" (``job_hint_subject``), sent by whoever published
# them once JetStream acknowledged the publication (a job is stored, so a pull finds it), and
# heard by every executor whose pool sleeps; the payload is how many, as ASCII digits.
JOB_HINT_PREFIX = "evalmesh.control.queued"
# Core NATS request/reply, one subject per executor instance (``drain_subject``): a serialized
# ``executor.v1.DrainRequest`` asks that instance to drain; it answers with its ``PoolStatus`` once
# the drain began. The scheduler sends it for ``DrainExecutor``: every executor is already on NATS,
# so no executor needs an address the control plane can dial.
DRAIN_SUBJECT_PREFIX = "evalmesh.control.drain"
# Key-value buckets: executor heartbeats (entries expire), and the reconciler/reaper leader lease.
EXECUTORS_BUCKET = "EVALMESH_EXECUTORS"
LEADER_BUCKET = "EVALMESH_LEADER"
# JetStream's max-deliveries advisories for the job consumers are core NATS messages, lost while
# no scheduler listens; this stream keeps them until the scheduler's dead-letter handler acks them.
JOB_ADVISORIES_STREAM = "EVALMESH_JOB_ADVISORIES"
DEAD_LETTER_CONSUMER = "dead-letters"

_PRIORITY_BY_VALUE = {0: "normal", 1: "high", 2: "normal", 3: "low"}  # evalmesh.v1.Priority
_TOKEN_FORBIDDEN = frozenset(" \t\r\n.*>")
_SUBJECT_FORBIDDEN = frozenset(" \t\r\n*>")


def _check(priority: str) -> str:
    if priority not in PRIORITY_NAMES:
        raise ValueError(f"unknown priority {priority!r}")
    return priority


def job_subject(priority: str) -> str:
    """The work-queue subject for jobs of one priority class."""
    return f"evalmesh.jobs.{_check(priority)}"


def job_filter(priority: str) -> str:
    """The subjects of one priority class's jobs: one subject per evaluation under the class."""
    return f"{job_subject(priority)}.*"


def job_hint_subject(priority: str) -> str:
    """Where the publisher of a class's jobs says that some are queued (core NATS, a wake-up
    hint for idle executors: the work itself is only ever pulled from the stream)."""
    return f"{JOB_HINT_PREFIX}.{_check(priority)}"


def job_message_subject(priority: str, evaluation_id: str) -> str:
    """The subject of one evaluation's job; the stream keeps at most one message per subject."""
    if not evaluation_id or _TOKEN_FORBIDDEN.intersection(evaluation_id):
        raise ValueError(f"evaluation id {evaluation_id!r} is not a single subject token")
    return f"{job_subject(priority)}.{evaluation_id}"


def job_priority(subject: str) -> str | None:
    """The priority class of a job message's subject (job_message_subject), None if it has none."""
    parts = subject.split(".")
    if len(parts) != 4 or f"{parts[0]}.{parts[1]}" != "evalmesh.jobs":
        return None
    return parts[2] if parts[2] in PRIORITY_NAMES else None


def priority_name(value: int) -> str:
    """The class name of an ``evalmesh.v1.Priority`` number; unspecified means ``normal``."""
    if value not in _PRIORITY_BY_VALUE:
        raise ValueError(f"unknown priority {value}")
    return _PRIORITY_BY_VALUE[value]


def max_deliveries_advisory_subject(consumer: str = "*") -> str:
    """JetStream's advisory when a job consumer gave up on a message (``*``: any consumer)."""
    return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{JOBS_STREAM}.{consumer}"


def job_consumer(priority: str) -> str:
    """The durable pull consumer every executor shares for one priority class."""
    return f"jobs-{_check(priority)}"


def dead_letter_subject(priority: str) -> str:
    """Where a job that exhausted its deliveries is copied for inspection."""
    return f"evalmesh.dead.{_check(priority)}"


def event_subject(evaluation_id: str) -> str:
    """Live run events (output chunks, state changes) of one evaluation, for watchers."""
    return f"evalmesh.events.{evaluation_id}"


def drain_subject(instance_id: str) -> str:
    """Where one executor instance listens for drain requests (its id may hold dots: the
    subject is literal, never matched by a wildcard)."""
    tokens = instance_id.split(".")
    if _SUBJECT_FORBIDDEN.intersection(instance_id) or not all(tokens):
        raise ValueError(f"executor id {instance_id!r} cannot be part of a subject")
    return f"{DRAIN_SUBJECT_PREFIX}.{instance_id}"
