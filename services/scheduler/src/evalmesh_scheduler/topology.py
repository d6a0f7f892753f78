"""The JetStream topology the scheduler owns, created or updated idempotently at start.

- ``JOBS_STREAM``: WorkQueue, file storage, one subject per evaluation under its priority's
  subject (``evalmesh.jobs.<priority>.<evaluation id>``), at most one message per subject
  (discard new per subject), bounded message count and bytes (discard new), a duplicate window.
- One durable pull consumer per priority (``jobs-<priority>``), filtered to that priority's
  subjects (the filters never overlap, as a WorkQueue stream requires), explicit ack, ack_wait,
  max_deliver and max_ack_pending from the config.
- ``JOB_ADVISORIES_STREAM``: keeps the consumers' max-deliveries advisories until the scheduler's
  dead-letter handler has acted on them, with its durable consumer ``DEAD_LETTER_CONSUMER``.
- ``DEAD_LETTER_STREAM``: limits retention (age and count), for inspection and redrive.
- KV buckets ``EXECUTORS_BUCKET`` (heartbeats, entries expire) and ``LEADER_BUCKET`` (lease).

Why each setting is what it is: ``docs/queues.md``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import Any

from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from evalmesh_common.subjects import (
    DEAD_LETTER_CONSUMER,
    DEAD_LETTER_STREAM,
    EXECUTORS_BUCKET,
    JOB_ADVISORIES_STREAM,
    JOBS_STREAM,
    LEADER_BUCKET,
    PRIORITY_NAMES,
    dead_letter_subject,
    job_consumer,
    job_filter,
    max_deliveries_advisory_subject,
)
from evalmesh_scheduler.config import QueueConfig

__all__ = ["Topology", "kv_stream_name"]

logger = logging.getLogger(__name__)

_ADVISORY_MAX_AGE = 7 * 24 * 3600.0
_ADVISORY_ACK_WAIT = 30.0


def kv_stream_name(bucket: str) -> str:
    """The stream behind a KV bucket."""
    return f"KV_{bucket}"


@dataclass(frozen=True)
class Topology:
    """The streams, consumers and buckets for one :class:`QueueConfig`."""

    config: QueueConfig

    def streams(self) -> list[api.StreamConfig]:
        """Every stream the scheduler owns, work queue first."""
        return [self.jobs_stream(), self.advisories_stream(), self.dead_letter_stream()]

    def jobs_stream(self) -> api.StreamConfig:
        """The work queue."""
        return api.StreamConfig(
            name=JOBS_STREAM,
            description="evalmesh jobs: one message per queued evaluation",
            subjects=[job_filter(p) for p in PRIORITY_NAMES],
            retention=api.RetentionPolicy.WORK_QUEUE,
            storage=api.StorageType.FILE,
            num_replicas=self.config.replicas,
            max_msgs=self.config.stream_max_msgs,
            max_bytes=self.config.max_bytes,
            max_msgs_per_subject=1,
            discard=api.DiscardPolicy.NEW,
            discard_new_per_subject=True,
            duplicate_window=self.config.duplicate_window,
            max_msg_size=64 * 1024,
        )

    def advisories_stream(self) -> api.StreamConfig:
        """Max-deliveries advisories of the job consumers, kept until handled."""
        return api.StreamConfig(
            name=JOB_ADVISORIES_STREAM,
            description="max-deliveries advisories of the job consumers, until dead-lettered",
            subjects=[max_deliveries_advisory_subject()],
            retention=api.RetentionPolicy.WORK_QUEUE,
            storage=api.StorageType.FILE,
            num_replicas=self.config.replicas,
            max_age=_ADVISORY_MAX_AGE,
            max_msgs=self.config.dead_letter_max_msgs,
            discard=api.DiscardPolicy.OLD,
        )

    def dead_letter_stream(self) -> api.StreamConfig:
        """Jobs that exhausted their deliveries, for inspection and redrive."""
        return api.StreamConfig(
            name=DEAD_LETTER_STREAM,
            description="evalmesh jobs that exhausted their deliveries",
            subjects=[dead_letter_subject(p) for p in PRIORITY_NAMES],
            retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType.FILE,
            num_replicas=self.config.replicas,
            max_age=self.config.dead_letter_max_age,
            max_msgs=self.config.dead_letter_max_msgs,
            discard=api.DiscardPolicy.OLD,
            duplicate_window=self.config.duplicate_window,
        )

    def job_consumers(self) -> list[api.ConsumerConfig]:
        """The durable pull consumers executors share, one per priority class."""
        return [
            api.ConsumerConfig(
                durable_name=job_consumer(p),
                description=f"executors pull {p} priority jobs",
                filter_subject=job_filter(p),
                deliver_policy=api.DeliverPolicy.ALL,
                ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=self.config.ack_wait,
                max_deliver=self.config.max_deliver,
                max_ack_pending=self.config.max_ack_pending,
                num_replicas=self.config.replicas,
            )
            for p in PRIORITY_NAMES
        ]

    def advisory_consumer(self) -> api.ConsumerConfig:
        """The durable consumer the schedulers share to handle advisories once each."""
        return api.ConsumerConfig(
            durable_name=DEAD_LETTER_CONSUMER,
            description="schedulers dead-letter jobs that exhausted their deliveries",
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=_ADVISORY_ACK_WAIT,
            max_ack_pending=100,
            num_replicas=self.config.replicas,
        )

    def buckets(self) -> list[api.KeyValueConfig]:
        """The KV buckets: executor heartbeats and the leader lease, both expiring."""
        return [
            api.KeyValueConfig(
                bucket=EXECUTORS_BUCKET,
                description="executor heartbeats (PoolStatus); an entry expires with its executor",
                history=1,
                ttl=self.config.executors_ttl,
                storage=api.StorageType.FILE,
                replicas=self.config.replicas,
            ),
            api.KeyValueConfig(
                bucket=LEADER_BUCKET,
                description="which scheduler runs the reconciler and reaper",
                history=1,
                ttl=self.config.leader_ttl,
                storage=api.StorageType.FILE,
                replicas=self.config.replicas,
            ),
        ]

    async def ensure(self, js: JetStreamContext) -> None:
        """Create what is missing and update what differs; safe to run again at any time."""
        for stream in self.streams():
            await ensure_stream(js, stream)
        for consumer in self.job_consumers():
            await js.add_consumer(JOBS_STREAM, consumer)  # creates, or updates a changed one
        await js.add_consumer(JOB_ADVISORIES_STREAM, self.advisory_consumer())
        for bucket in self.buckets():
            await ensure_bucket(js, bucket)


async def ensure_stream(js: JetStreamContext, wanted: api.StreamConfig) -> None:
    """Create ``wanted``, or update the existing stream where its settings differ."""
    assert wanted.name is not None
    try:
        info = await js.stream_info(wanted.name)
    except NotFoundError:
        await js.add_stream(wanted)
        logger.info("created stream %s", wanted.name, extra={"stream": wanted.name})
        return
    changes = _differences(info.config, wanted)
    if changes:
        await js.update_stream(info.config.evolve(**changes))
        logger.info(
            "updated stream %s",
            wanted.name,
            extra={"stream": wanted.name, "changed": sorted(changes)},
        )


async def ensure_bucket(js: JetStreamContext, wanted: api.KeyValueConfig) -> None:
    """Create the bucket, or align its TTL and replicas with ``wanted``."""
    name = kv_stream_name(wanted.bucket)
    try:
        info = await js.stream_info(name)
    except NotFoundError:
        await js.create_key_value(wanted)
        logger.info("created bucket %s", wanted.bucket, extra={"bucket": wanted.bucket})
        return
    changes = {
        key: value
        for key, value in (("max_age", wanted.ttl), ("num_replicas", wanted.replicas))
        if value is not None and getattr(info.config, key) != value
    }
    if changes:
        await js.update_stream(info.config.evolve(**changes))
        logger.info("updated bucket %s", wanted.bucket, extra={"changed": sorted(changes)})


def _differences(current: api.StreamConfig, wanted: api.StreamConfig) -> dict[str, Any]:
    ignored = {"name", "description", "metadata"}
    changes: dict[str, Any] = {}
    for field in fields(api.StreamConfig):
        value = getattr(wanted, field.name)
        if field.name in ignored or value is None or value == field.default:
            continue
        if getattr(current, field.name) != value:
            changes[field.name] = value
    return changes
