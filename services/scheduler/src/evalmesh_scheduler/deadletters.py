"""Dead letters: jobs that exhausted their deliveries, set aside, ended ERROR, and re-drivable.

When a job consumer gives up on a message (max deliveries), JetStream emits an advisory; the
advisories stream keeps it until a scheduler has, in this order (each step idempotent, so a
crash anywhere just repeats the sequence when the advisory comes back):

1. copied the job to ``DEAD_LETTER_STREAM`` with the reason, delivery count and original
   sequence in headers (``Nats-Msg-Id`` makes a repeat a no-op);
2. ended the evaluation ERROR in storage (cause MAX_ATTEMPTS, fault PLATFORM), unless terminal;
3. deleted the job from the work queue, which also frees its subject for a redrive.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
from typing import Any

from google.protobuf import timestamp_pb2
from google.protobuf.message import DecodeError
from nats.aio.client import Client
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from evalmesh.scheduler.v1 import job_pb2, scheduler_service_pb2
from evalmesh.storage.v1 import record_pb2
from evalmesh.v1 import cluster_pb2, evaluation_pb2
from evalmesh_common import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from evalmesh_common.states import TERMINAL_STATES
from evalmesh_common.subjects import (
    DEAD_LETTER_STREAM,
    JOBS_STREAM,
    dead_letter_subject,
    priority_name,
)
from evalmesh_scheduler.jobs import JobQueue, nats_unavailable
from evalmesh_scheduler.queue import Submitter
from evalmesh_scheduler.storage_client import StorageClient

__all__ = ["DeadLetters"]

logger = logging.getLogger(__name__)

Record = record_pb2.EvaluationRecord
State = evaluation_pb2.Evaluation.State
H_REASON = "Evalmesh-Dead-Reason"
H_DELIVERIES = "Evalmesh-Deliveries"
H_SEQUENCE = "Evalmesh-Stream-Seq"
H_CONSUMER = "Evalmesh-Consumer"
_TOKEN_PREFIX = "dl1:"  # noqa: S105 - a page-token format tag, not a secret
_DEFAULT_PAGE, _MAX_PAGE = 50, 500
_REDRIVE_LABEL = "evalmesh.dev/redrive-of"
_MAX_LABELS = 32
_FAIL_TRIES = 3


class DeadLetters:
    """Set aside, list and re-drive jobs that exhausted their deliveries."""

    def __init__(
        self,
        client: Client,
        js: JetStreamContext,
        storage: StorageClient,
        jobs: JobQueue,
        submitter: Submitter,
    ) -> None:
        self._client = client
        self._js = js
        self.storage = storage
        self.jobs = jobs
        self.submitter = submitter
        self.set_aside = 0  # letters this replica wrote (a counter for the metrics)

    async def handle_advisory(self, data: bytes) -> None:
        """Act on one max-deliveries advisory (JSON from JetStream); idempotent."""
        advisory: dict[str, Any] = json.loads(data)
        if advisory.get("stream") != JOBS_STREAM:
            return
        sequence = int(advisory["stream_seq"])
        try:
            message = await self._js.get_msg(JOBS_STREAM, seq=sequence)
        except NotFoundError:
            return  # handled already, or acked at the last moment
        job = _job_of(message)
        deliveries = int(advisory.get("deliveries", 0))
        reason = (
            f"job was delivered {deliveries} times without being acknowledged "
            f"(max deliveries, consumer {advisory.get('consumer', '?')})"
        )
        if await self._still_wanted(job.evaluation_id):
            await self._copy(job, message, deliveries, reason, str(advisory.get("consumer", "")))
            self.set_aside += 1
            await self._fail(job.evaluation_id, reason)
        await self._delete(JOBS_STREAM, sequence)
        logger.warning(
            "dead-lettered a job",
            extra={"evaluation": job.evaluation_id, "deliveries": deliveries, "seq": sequence},
        )

    async def list(
        self, page_size: int, page_token: str
    ) -> tuple[list[cluster_pb2.DeadLetter], str]:
        """One page of dead letters, oldest first, and the token of the next page."""
        if page_size < 0:
            raise InvalidArgument("bad page_size", [FieldViolation("page_size", "must be >= 0")])
        size = min(page_size or _DEFAULT_PAGE, _MAX_PAGE)
        sequence = _decode_token(page_token)
        letters: list[cluster_pb2.DeadLetter] = []
        async with nats_unavailable("cannot read dead letters"):
            while len(letters) <= size:  # one extra to know whether a next page exists
                message = await self._next_letter(sequence)
                if message is None:
                    return letters, ""
                letters.append(_to_dead_letter(message))
                sequence = (message.seq or 0) + 1
        return letters[:size], _encode_token(letters[size].sequence)

    async def get(self, sequence: int) -> cluster_pb2.DeadLetter:
        """One dead letter by its sequence (NOT_FOUND once redriven or aged out)."""
        return _to_dead_letter(await self._letter(sequence))

    async def count(self) -> int:
        """How many dead letters wait in the dead-letter stream."""
        async with nats_unavailable("cannot count dead letters"):
            return int((await self._js.stream_info(DEAD_LETTER_STREAM)).state.messages)

    async def redrive(self, sequence: int) -> Record:
        """Submit the letter's spec again as a new evaluation, then delete the letter.

        The new request_id is derived from the letter, so a redrive retried after a crash (or a
        lost reply) finds the evaluation the first try created instead of making another.
        """
        message = await self._letter(sequence)
        job = _job_of(message)
        original = await self.storage.get(job.evaluation_id, full=True)
        spec = evaluation_pb2.EvaluationSpec()
        spec.CopyFrom(original.evaluation.spec)
        if len(spec.labels) < _MAX_LABELS:
            spec.labels.setdefault(_REDRIVE_LABEL, job.evaluation_id)
        request = scheduler_service_pb2.SubmitEvaluationRequest(
            tenant=original.tenant,
            request_id=f"redrive-{job.evaluation_id}-{sequence}",
            spec=spec,
        )
        record, _ = await self.submitter.submit(request)
        await self._delete(DEAD_LETTER_STREAM, sequence)
        logger.info(
            "re-drove a dead letter",
            extra={"evaluation": record.evaluation.id, "original": job.evaluation_id},
        )
        return record

    async def _still_wanted(self, evaluation_id: str) -> bool:
        try:
            record = await self.storage.get(evaluation_id)
        except NotFound:
            return False  # purged: nothing left to fail or redrive
        return record.evaluation.state not in TERMINAL_STATES

    async def _copy(
        self,
        job: job_pb2.Job,
        message: api.RawStreamMsg,
        deliveries: int,
        reason: str,
        consumer: str,
    ) -> None:
        headers = {
            "Nats-Msg-Id": f"dead.{job.evaluation_id}.{message.seq}",
            H_REASON: reason,
            H_DELIVERIES: str(deliveries),
            H_SEQUENCE: str(message.seq),
            H_CONSUMER: consumer,
        }
        subject = dead_letter_subject(priority_name(job.priority))
        await self._js.publish(subject, job.SerializeToString(), headers=headers)

    async def _fail(self, evaluation_id: str, reason: str) -> None:
        """End the evaluation ERROR whether it is RUNNING (stuck) or QUEUED (never claimed)."""
        result = evaluation_pb2.EvaluationResult(
            cause=evaluation_pb2.TERMINATION_CAUSE_MAX_ATTEMPTS,
            fault=evaluation_pb2.FAULT_PLATFORM,
            detail=reason,
        )
        for _ in range(_FAIL_TRIES):
            record = await self.storage.get(evaluation_id)
            state = record.evaluation.state
            if state in TERMINAL_STATES:
                return
            try:
                if state == State.STATE_RUNNING:
                    await self.jobs.send_cancel(evaluation_id, reason)
                # Storage ends a QUEUED evaluation ERROR too, fenced on its current attempt.
                attempt = record.evaluation.attempt
                await self.storage.complete(evaluation_id, attempt, State.STATE_ERROR, result)
                return
            except FailedPrecondition as exc:  # raced a claim or a completion: look again
                logger.info("dead-letter race, retrying: %s", exc)
        logger.error(
            "could not end a dead-lettered evaluation", extra={"evaluation": evaluation_id}
        )

    async def _next_letter(self, sequence: int) -> api.RawStreamMsg | None:
        try:
            return await self._js.get_msg(DEAD_LETTER_STREAM, seq=sequence, subject=">", next=True)
        except NotFoundError:
            return None

    async def _letter(self, sequence: int) -> api.RawStreamMsg:
        if sequence <= 0:
            raise InvalidArgument("bad sequence", [FieldViolation("sequence", "must be positive")])
        try:
            async with nats_unavailable("cannot read the dead letter"):
                return await self._js.get_msg(DEAD_LETTER_STREAM, seq=sequence)
        except NotFoundError:
            raise NotFound(
                f"dead letter {sequence} not found",
                reason="DEAD_LETTER_NOT_FOUND",
                metadata={"sequence": str(sequence)},
            ) from None

    async def _delete(self, stream: str, sequence: int) -> None:
        with contextlib.suppress(NotFoundError):
            async with nats_unavailable(f"cannot delete message {sequence} of {stream}"):
                await self._js.delete_msg(stream, sequence)


def _to_dead_letter(message: api.RawStreamMsg) -> cluster_pb2.DeadLetter:
    job = job_pb2.Job.FromString(message.data or b"")
    headers = message.headers or {}
    letter = cluster_pb2.DeadLetter(
        evaluation_id=job.evaluation_id,
        tenant=job.tenant,
        priority=job.priority,
        deliveries=int(headers.get(H_DELIVERIES, "0") or 0),
        reason=str(headers.get(H_REASON, "")),
        sequence=message.seq or 0,
    )
    if message.time is not None:
        stamp = timestamp_pb2.Timestamp()
        stamp.FromDatetime(message.time)
        letter.dead_time.CopyFrom(stamp)
    return letter


def _encode_token(sequence: int) -> str:
    return base64.urlsafe_b64encode(f"{_TOKEN_PREFIX}{sequence}".encode()).decode()


def _decode_token(token: str) -> int:
    if not token:
        return 1
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
        if not text.startswith(_TOKEN_PREFIX):
            raise ValueError(text)
        sequence = int(text.removeprefix(_TOKEN_PREFIX))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgument(
            "bad page_token", [FieldViolation("page_token", "is not a token this API issued")]
        ) from None
    if sequence < 1:
        raise InvalidArgument("bad page_token", [FieldViolation("page_token", "out of range")])
    return sequence


def _job_of(message: api.RawStreamMsg) -> job_pb2.Job:
    """The job a work-queue message carries; for bytes that do not parse (a poison message), a
    job rebuilt from the subject, which names the evaluation: evalmesh.jobs.<priority>.<id>."""
    try:
        return job_pb2.Job.FromString(message.data or b"")
    except DecodeError:
        evaluation_id = (message.subject or "").rpartition(".")[2]
        return job_pb2.Job(evaluation_id=evaluation_id)
