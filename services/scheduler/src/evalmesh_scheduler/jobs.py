"""Jobs on the work queue: admission, publication, presence, removal and cancel commands.

Every QUEUED evaluation has at most one job message, on its own subject under its priority's
subject; the stream refuses a second one (discard new per subject). So a publish that finds the
job already queued is a success, and the reconciler can re-publish whatever storage says is
unpublished without ever doubling a job. ``Nats-Msg-Id`` is the evaluation id on the first
publication and ``<id>.<attempt>`` after a requeue, so the duplicate window never swallows the job
of a new attempt; a job found missing is published again as ``<id>.<attempt>.r<publications>``,
which no earlier publication used.

Every failed publish is logged with the exception's type and text: some of them (a
``TimeoutError`` from a deadline) have an empty message, which once made "job not published"
lines say nothing at all.

With traces on (``trace_jobs``), a job also carries the W3C ``traceparent`` of the submit that
published it, so the executor's spans join the evaluation's trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from evalmesh.scheduler.v1 import job_pb2
from evalmesh.storage.v1 import record_pb2
from evalmesh_common import ResourceExhausted, Unavailable
from evalmesh_common.messaging import inject_trace_context
from evalmesh_common.subjects import (
    CANCEL_SUBJECT,
    JOBS_STREAM,
    job_consumer,
    job_hint_subject,
    job_message_subject,
    priority_name,
)

__all__ = [
    "JobQueue",
    "QueueDepth",
    "describe",
    "job_for",
    "message_id",
    "nats_unavailable",
    "republish_id",
]

logger = logging.getLogger(__name__)

Record = record_pb2.EvaluationRecord

_ALREADY_QUEUED = "maximum messages per subject exceeded"
_FULL = ("maximum messages exceeded", "maximum bytes exceeded")
_NATS_ERRORS = (nats.errors.Error, TimeoutError, OSError)
_RETRY_AFTER_FULL = 5.0
_DEPTH_TTL = 0.1  # seconds a stream depth read serves admissions for
_PUBLISH_CONCURRENCY = 256  # publish requests in flight at once
_PRESENCE_CONCURRENCY = 64  # presence lookups in flight at once, so a page never floods NATS
# A job below its consumer's ack floor for this long is stranded, not on its way to the dead
# letters: the max-deliveries advisory, when there is one, is handled within a second.
_STRANDED_AFTER = 10.0


def describe(error: BaseException) -> str:
    """``Type: message`` of an exception, never empty (``str(TimeoutError())`` is "")."""
    name = type(error).__name__
    text = str(error) or ", ".join(repr(arg) for arg in error.args) or "no details"
    return text if name in text else f"{name}: {text}"


@contextlib.asynccontextmanager
async def nats_unavailable(what: str) -> AsyncIterator[None]:
    """Report NATS failures inside the block as UNAVAILABLE (retryable), not INTERNAL.

    A "not found" answer is an answer, not a failure: it passes through for the caller.
    """
    try:
        yield
    except NotFoundError:
        raise
    except _NATS_ERRORS as exc:
        raise Unavailable(f"{what}: NATS did not answer ({describe(exc)})") from exc


@dataclass(frozen=True)
class QueueDepth:
    """How full the work-queue stream is."""

    messages: int
    bytes: int


def job_for(record: Record) -> job_pb2.Job:
    """The work-queue message for a stored evaluation."""
    evaluation = record.evaluation
    return job_pb2.Job(
        evaluation_id=evaluation.id,
        tenant=record.tenant,
        priority=evaluation.spec.priority,
        runtime=evaluation.spec.runtime or "python",
        enqueue_time=evaluation.create_time,
        limits=evaluation.spec.limits,
    )


def message_id(record: Record) -> str:
    """``Nats-Msg-Id``: the evaluation id, suffixed with the attempt once it was claimed."""
    evaluation = record.evaluation
    return evaluation.id if evaluation.attempt == 0 else f"{evaluation.id}.{evaluation.attempt}"


def republish_id(record: Record) -> str:
    """``Nats-Msg-Id`` of a job published again because it went missing from the queue.

    Unique per recorded publication, so the duplicate window cannot swallow it even when the
    missing job was stored (and acked away) under ``message_id`` a moment ago.
    """
    return f"{message_id(record)}.r{record.publish_count}"


def _consumer_for(record: Record) -> str:
    return job_consumer(priority_name(record.evaluation.spec.priority))


def subject_for(record: Record) -> str:
    """The subject of a stored evaluation's job."""
    evaluation = record.evaluation
    return job_message_subject(priority_name(evaluation.spec.priority), evaluation.id)


class JobQueue:
    """Publishes and inspects jobs on ``JOBS_STREAM``."""

    def __init__(
        self,
        client: Client,
        js: JetStreamContext,
        max_jobs: int,
        max_bytes: int,
        timeout: float,
        *,
        trace_jobs: bool = False,
    ) -> None:
        self._client = client
        self._trace_jobs = trace_jobs
        self._js = js
        self.max_jobs = max_jobs
        self.max_bytes = max_bytes
        self.timeout = timeout
        self._depth: QueueDepth | None = None
        self._depth_at = 0.0
        self._admitted = 0
        self._below_floor: dict[int, float] = {}  # stream sequence -> when first seen there
        self._hints: dict[str, int] = {}  # class -> jobs stored since the last hint went out
        self._hinting: asyncio.Task[None] | None = None

    async def depth(self) -> QueueDepth:
        """Messages and bytes in the work queue now."""
        async with nats_unavailable("the work queue is unreachable"):
            info = await self._js.stream_info(JOBS_STREAM)
        return QueueDepth(info.state.messages, info.state.bytes)

    async def admit(self, count: int) -> None:
        """Refuse ``count`` new jobs (RESOURCE_EXHAUSTED) unless the queue has room for them.

        The depth read from the stream is reused for ``_DEPTH_TTL`` with this scheduler's own
        admissions added, so a burst of submits costs one stream lookup, not one each. The
        stream's own hard limit, above the admission limit, absorbs what other schedulers
        admitted meanwhile. A disconnected client is UNAVAILABLE at once, as before.
        """
        if not self._client.is_connected:
            raise Unavailable("the work queue is unreachable: NATS is not connected")
        depth = await self._recent_depth()
        if depth.messages + count > self.max_jobs or depth.bytes >= self.max_bytes:
            raise ResourceExhausted(
                f"the work queue is full ({depth.messages} jobs queued, limit {self.max_jobs})",
                reason="QUEUE_FULL",
                retry_after=_RETRY_AFTER_FULL,
                metadata={"queued": str(depth.messages), "limit": str(self.max_jobs)},
            )
        self._admitted += count

    async def _recent_depth(self) -> QueueDepth:
        now = time.monotonic()
        if self._depth is None or now - self._depth_at >= _DEPTH_TTL:
            self._depth, self._depth_at, self._admitted = await self.depth(), now, 0
        return QueueDepth(self._depth.messages + self._admitted, self._depth.bytes)

    async def publish(
        self, records: Sequence[Record], *, msg_id: Callable[[Record], str] = message_id
    ) -> list[str]:
        """Publish the jobs of ``records`` together; return the ids now queued.

        A job already in the queue counts as queued. Failures (NATS away, stream full) are
        logged with their cause and left out: those evaluations stay unpublished in storage,
        and the reconciler publishes them later, so a failure here never loses work.

        Each job is a JetStream publish request of its own, a bounded number in flight and one
        deadline for all. Not ``publish_async``: nats.py raises the server's error replies
        inside its reply handler instead of failing the future, so a refused publish ("already
        queued", "stream full") would only surface as a timeout, with no reason.
        """
        if not records:
            return []
        gate = asyncio.Semaphore(_PUBLISH_CONCURRENCY)

        async def one(record: Record) -> object:
            headers = {"Nats-Msg-Id": msg_id(record)}
            if self._trace_jobs:
                inject_trace_context(headers)
            async with gate:
                ack = await self._js.publish(
                    subject_for(record),
                    job_for(record).SerializeToString(),
                    timeout=self.timeout,
                    headers=headers,
                )
            self._hint(priority_name(record.evaluation.spec.priority))
            return ack

        tasks = [asyncio.ensure_future(one(record)) for record in records]
        done, pending = await asyncio.wait(tasks, timeout=self.timeout)
        for task in pending:
            task.cancel()
        late = TimeoutError(
            f"JetStream did not acknowledge the publish within {self.timeout:g} s "
            "(the job may or may not be stored)"
        )
        results = [_outcome(task) if task in done else late for task in tasks]
        return [r.evaluation.id for r, res in zip(records, results, strict=True) if _ok(r, res)]

    def _hint(self, priority: str) -> None:
        """Tell idle executors that a job of ``priority`` is stored (see ``job_hint_subject``).

        Only after JetStream's acknowledgement: a pull that a hint prompts finds the job, where
        a hint racing the store would find the class empty and leave the job waiting for the
        executors' recheck interval. The jobs acknowledged while one hint is being sent share
        the next, so a batch costs a hint or two, not one per job.
        """
        self._hints[priority] = self._hints.get(priority, 0) + 1
        if self._hinting is None or self._hinting.done():
            self._hinting = asyncio.ensure_future(self._send_hints())

    async def _send_hints(self) -> None:
        while self._hints:
            hints, self._hints = self._hints, {}
            for priority, count in hints.items():
                try:
                    await self._client.publish(job_hint_subject(priority), str(count).encode())
                except (nats.errors.Error, OSError) as exc:  # executors recheck on their own
                    logger.debug("new-job hint not sent: %s", describe(exc))

    async def replace(self, records: Sequence[Record]) -> list[str]:
        """Drop whatever job the evaluations have on the queue, then publish new ones.

        For requeued evaluations: their old job may still sit in the stream, delivered to the
        executor that was lost and never acknowledged, and it would hold the evaluation's
        subject (one job per evaluation) until ``ack_wait`` ran out. A new job is deliverable at
        once; an executor still holding the old delivery finds its acks ignored, and storage's
        fenced claim makes a second start impossible either way.
        """
        for record in records:
            await self.remove(record)
        return await self.publish(records)

    async def missing(self, records: Sequence[Record]) -> list[Record]:
        """The records whose job is not deliverable now: gone from the work queue, or stranded.

        A job is stranded when it is still in the stream but below its consumer's ack floor
        for a while: JetStream will never deliver it again (its deliveries were spent and the
        advisory that dead-letters such a job never came, or a restarted nats-server lost the
        consumer's record of it). A stranded job is deleted, so the caller can publish it anew.
        One lookup of the evaluation's subject each, a bounded number at a time, and one
        consumer lookup per priority. Raises Unavailable if NATS does not answer.
        """
        gate = asyncio.Semaphore(_PRESENCE_CONCURRENCY)
        seen_at = time.monotonic()

        async def absent(record: Record, floors: dict[str, int]) -> bool:
            async with gate:
                try:
                    message = await self._js.get_last_msg(JOBS_STREAM, subject_for(record))
                except NotFoundError:
                    return True
                floor = floors.get(_consumer_for(record), 0)
                if message.seq is None or message.seq > floor:
                    return False
                return await self._drop_if_stranded(record, message.seq, seen_at)

        async with nats_unavailable("cannot check the work queue"):
            floors = await self._ack_floors(records)
            flags = await asyncio.gather(*(absent(record, floors) for record in records))
        self._forget_old_sightings(seen_at)
        return [record for record, gone in zip(records, flags, strict=True) if gone]

    async def _ack_floors(self, records: Sequence[Record]) -> dict[str, int]:
        floors = {}
        for consumer in {_consumer_for(record) for record in records}:
            try:
                info = await self._js.consumer_info(JOBS_STREAM, consumer)
            except NotFoundError:
                continue
            floors[consumer] = info.ack_floor.stream_seq if info.ack_floor else 0
        return floors

    async def _drop_if_stranded(self, record: Record, seq: int, now: float) -> bool:
        first = self._below_floor.setdefault(seq, now)
        if now - first < _STRANDED_AFTER:
            return False
        with contextlib.suppress(NotFoundError):
            await self._js.delete_msg(JOBS_STREAM, seq)
        self._below_floor.pop(seq, None)
        logger.warning(
            "a job was stranded below its consumer's ack floor; dropped to publish it anew",
            extra={"evaluation": record.evaluation.id, "stream_seq": seq},
        )
        return True

    def _forget_old_sightings(self, now: float) -> None:
        stale = [
            seq for seq, first in self._below_floor.items() if now - first > 60 * _STRANDED_AFTER
        ]
        for seq in stale:
            del self._below_floor[seq]

    async def remove(self, record: Record) -> None:
        """Drop the evaluation's job from the queue (best effort: executors also drop a job
        whose evaluation is terminal or claimed)."""
        try:
            await self._js.purge_stream(JOBS_STREAM, subject=subject_for(record))
        except (*_NATS_ERRORS, APIError) as exc:
            logger.warning(
                "could not drop a job: %s",
                describe(exc),
                extra={"evaluation": record.evaluation.id},
            )
        self._depth = None  # the room it freed is there for the next admission at once

    async def send_cancel(self, evaluation_id: str, reason: str) -> None:
        """Tell the executor running the evaluation to stop it (core NATS, best effort)."""
        command = job_pb2.CancelCommand(evaluation_id=evaluation_id, reason=reason)
        try:
            await self._client.publish(CANCEL_SUBJECT, command.SerializeToString())
            await self._client.flush(timeout=max(1, round(self.timeout)))
        except _NATS_ERRORS as exc:
            # The executor also learns of the cancel when it next renews its lease.
            logger.warning(
                "could not send a cancel command: %s",
                describe(exc),
                extra={"evaluation": evaluation_id},
            )


def _outcome(task: asyncio.Future[object]) -> object:
    """A finished publish's acknowledgement, or the exception it ended with."""
    return task.exception() or task.result()


def _ok(record: Record, result: object) -> bool:
    if not isinstance(result, BaseException):
        return True
    if isinstance(result, APIError) and (result.description or "") == _ALREADY_QUEUED:
        return True
    level = logging.INFO if _is_full(result) else logging.WARNING
    logger.log(
        level,
        "job not published; the reconciler will retry: %s",
        describe(result),
        extra={"evaluation": record.evaluation.id},
    )
    return False


def _is_full(error: BaseException) -> bool:
    return isinstance(error, APIError) and (error.description or "") in _FULL
