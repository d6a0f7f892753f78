"""Jobs on the work queue: admission, publication, presence, removal and cancel commands.

Every QUEUED evaluation has at most one job message, on its own subject under its priority's
subject; the stream refuses a second one (discard new per subject). So a publish that finds the
job already queued is a success, and the reconciler can re-publish whatever storage says is
unpublished without ever doubling a job. ``Nats-Msg-Id`` is the evaluation id on the first
publication and ``<id>.<attempt>`` after a requeue, so the duplicate window never swallows the job
of a new attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from evalmesh.scheduler.v1 import job_pb2
from evalmesh.storage.v1 import record_pb2
from evalmesh_common import ResourceExhausted, Unavailable
from evalmesh_common.subjects import (
    CANCEL_SUBJECT,
    JOBS_STREAM,
    job_message_subject,
    priority_name,
)

__all__ = ["JobQueue", "QueueDepth", "job_for", "message_id", "nats_unavailable"]

logger = logging.getLogger(__name__)

Record = record_pb2.EvaluationRecord

_ALREADY_QUEUED = "maximum messages per subject exceeded"
_FULL = ("maximum messages exceeded", "maximum bytes exceeded")
_NATS_ERRORS = (nats.errors.Error, TimeoutError, OSError)
_RETRY_AFTER_FULL = 5.0


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
        raise Unavailable(f"{what}: NATS did not answer ({type(exc).__name__}: {exc})") from exc


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


def subject_for(record: Record) -> str:
    """The subject of a stored evaluation's job."""
    evaluation = record.evaluation
    return job_message_subject(priority_name(evaluation.spec.priority), evaluation.id)


class JobQueue:
    """Publishes and inspects jobs on ``JOBS_STREAM``."""

    def __init__(
        self, client: Client, js: JetStreamContext, max_jobs: int, max_bytes: int, timeout: float
    ) -> None:
        self._client = client
        self._js = js
        self.max_jobs = max_jobs
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def depth(self) -> QueueDepth:
        """Messages and bytes in the work queue now."""
        async with nats_unavailable("the work queue is unreachable"):
            info = await self._js.stream_info(JOBS_STREAM)
        return QueueDepth(info.state.messages, info.state.bytes)

    async def admit(self, count: int) -> None:
        """Refuse ``count`` new jobs (RESOURCE_EXHAUSTED) unless the queue has room for them."""
        depth = await self.depth()
        if depth.messages + count > self.max_jobs or depth.bytes >= self.max_bytes:
            raise ResourceExhausted(
                f"the work queue is full ({depth.messages} jobs queued, limit {self.max_jobs})",
                reason="QUEUE_FULL",
                retry_after=_RETRY_AFTER_FULL,
                metadata={"queued": str(depth.messages), "limit": str(self.max_jobs)},
            )

    async def publish(self, records: Sequence[Record]) -> list[str]:
        """Publish the jobs of ``records`` together; return the ids now queued.

        A job already in the queue counts as queued. Failures (NATS away, stream full) are
        logged and left out: those evaluations stay unpublished in storage, and the reconciler
        publishes them later, so a failure here never loses work.
        """
        if not records:
            return []
        futures = [await self._publish_async(record) for record in records]
        try:
            async with asyncio.timeout(self.timeout):
                results = await asyncio.gather(*futures, return_exceptions=True)
        except TimeoutError:
            for future in futures:
                future.cancel()
            results = [
                f.exception() if f.done() and not f.cancelled() else TimeoutError() for f in futures
            ]
        return [r.evaluation.id for r, res in zip(records, results, strict=True) if _ok(r, res)]

    async def _publish_async(self, record: Record) -> asyncio.Future[Any]:
        try:
            return await self._js.publish_async(
                subject_for(record),
                job_for(record).SerializeToString(),
                wait_stall=self.timeout,
                headers={"Nats-Msg-Id": message_id(record)},
            )
        except _NATS_ERRORS as exc:  # not even sent: report it like a failed acknowledgement
            failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            failed.set_exception(exc)
            return failed

    async def is_queued(self, record: Record) -> bool:
        """Whether the evaluation's job is in the work queue now."""
        try:
            await self._js.get_last_msg(JOBS_STREAM, subject_for(record))
        except NotFoundError:
            return False
        return True

    async def remove(self, record: Record) -> None:
        """Drop the evaluation's job from the queue (best effort: executors also drop it)."""
        try:
            await self._js.purge_stream(JOBS_STREAM, subject=subject_for(record))
        except (*_NATS_ERRORS, APIError) as exc:
            logger.warning(
                "could not drop a cancelled job: %s",
                exc,
                extra={"evaluation": record.evaluation.id},
            )

    async def send_cancel(self, evaluation_id: str, reason: str) -> None:
        """Tell the executor running the evaluation to stop it (core NATS, best effort)."""
        command = job_pb2.CancelCommand(evaluation_id=evaluation_id, reason=reason)
        try:
            await self._client.publish(CANCEL_SUBJECT, command.SerializeToString())
            await self._client.flush(timeout=max(1, round(self.timeout)))
        except _NATS_ERRORS as exc:
            # The executor also learns of the cancel when it next renews its lease.
            logger.warning(
                "could not send a cancel command: %s", exc, extra={"evaluation": evaluation_id}
            )


def _ok(record: Record, result: object) -> bool:
    if not isinstance(result, BaseException):
        return True
    if isinstance(result, APIError) and (result.description or "") == _ALREADY_QUEUED:
        return True
    level = logging.INFO if _is_full(result) else logging.WARNING
    logger.log(
        level,
        "job not published; the reconciler will retry: %s",
        result,
        extra={"evaluation": record.evaluation.id},
    )
    return False


def _is_full(error: BaseException) -> bool:
    return isinstance(error, APIError) and (error.description or "") in _FULL
