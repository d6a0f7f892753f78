"""The storage service as the run loop sees it: typed calls, domain errors, bounded retries.

Each call has a deadline; a failed call is re-raised as the DomainError storage meant
(``error_from_rpc``). Transient failures (UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED: storage
restarting, the database busy) are retried with jittered backoff within a budget. Every call
here is safe to repeat: writes are fenced by the attempt number and idempotent, and a claim
whose reply was lost is recognised as this executor's own when retried.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import grpc
import grpc.aio
from google.protobuf import duration_pb2

from evalmesh.storage.v1 import record_pb2, storage_service_pb2, storage_service_pb2_grpc
from evalmesh.v1 import evaluation_pb2
from evalmesh_common import (
    Aborted,
    DeadlineExceeded,
    DomainError,
    FailedPrecondition,
    NotFound,
    Unavailable,
)
from evalmesh_common.backoff import backoff_delay
from evalmesh_common.server import error_from_rpc

__all__ = [
    "ALREADY_CLAIMED",
    "ALREADY_TERMINAL",
    "LEASE_NOT_EXPIRED",
    "STALE_ATTEMPT",
    "StorageClient",
]

logger = logging.getLogger(__name__)

R = TypeVar("R")
Record = record_pb2.EvaluationRecord
State = evaluation_pb2.Evaluation.State
_pb = storage_service_pb2

STALE_ATTEMPT = "STALE_ATTEMPT"
ALREADY_TERMINAL = "ALREADY_TERMINAL"
ALREADY_CLAIMED = "ALREADY_CLAIMED"
LEASE_NOT_EXPIRED = "LEASE_NOT_EXPIRED"
_TRANSIENT = (Unavailable, DeadlineExceeded, Aborted)
_FIRST_BACKOFF, _MAX_BACKOFF = 0.05, 1.0
# A give-back shortens the lease to this, so the attempt can be requeued at once.
_RELEASE_LEASE = 0.000001
_RELEASE_TRIES = 5


def _duration(seconds: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(max(1000, round(seconds * 1e9)))
    return duration


class StorageClient:
    """The storage calls an executor makes, over a channel the app owns."""

    def __init__(
        self, channel: grpc.aio.Channel, executor_id: str, timeout: float, retry_budget: float
    ) -> None:
        self._stub = storage_service_pb2_grpc.StorageServiceStub(channel)
        self.executor_id = executor_id
        self.timeout = timeout
        self.retry_budget = retry_budget

    async def get(self, evaluation_id: str, *, full: bool = False) -> Record:
        """Read one evaluation of any tenant (BASIC omits code and output)."""
        view = evaluation_pb2.EVALUATION_VIEW_FULL if full else evaluation_pb2.EVALUATION_VIEW_BASIC
        request = _pb.GetEvaluationRequest(id=evaluation_id, view=view)
        return (await self._call(self._stub.GetEvaluation, request)).record

    async def claim(
        self,
        evaluation_id: str,
        lease: float,
        runtime_digest: str,
        applied: evaluation_pb2.AppliedLimits,
        share: _pb.TenantShare | None = None,
    ) -> Record:
        """QUEUED -> RUNNING for this executor; returns the record with the FULL spec.

        FAILED_PRECONDITION (terminal, or claimed by another), NOT_FOUND and RESOURCE_EXHAUSTED
        (TENANT_AT_LIMIT: the tenant is at ``share``) propagate.
        """
        request = _pb.ClaimEvaluationRequest(
            id=evaluation_id,
            executor_id=self.executor_id,
            lease_duration=_duration(lease),
            runtime_digest=runtime_digest,
            applied_limits=applied,
            tenant_share=share,
        )
        retried = False

        def note_retry() -> None:
            nonlocal retried
            retried = True

        try:
            return (await self._call(self._stub.ClaimEvaluation, request, note_retry)).record
        except FailedPrecondition as exc:
            if not (retried and exc.reason == ALREADY_CLAIMED):
                raise
        # The first try may have committed and lost its reply: the claim may be ours.
        record = await self.get(evaluation_id, full=True)
        ours = record.evaluation.executor_id == self.executor_id
        if record.evaluation.state != State.STATE_RUNNING or not ours:
            raise FailedPrecondition("claimed by another executor", reason=ALREADY_CLAIMED)
        return record

    async def renew(self, evaluation_id: str, attempt: int, lease: float) -> bool:
        """Extend the attempt's lease; True if a client asked to cancel."""
        request = _pb.RenewLeaseRequest(
            id=evaluation_id, attempt=attempt, lease_duration=_duration(lease)
        )
        return bool((await self._call(self._stub.RenewLease, request)).cancel_requested)

    async def append(
        self, evaluation_id: str, attempt: int, chunks: Sequence[evaluation_pb2.OutputChunk]
    ) -> None:
        """Store output chunks of the attempt (idempotent on stream and sequence)."""
        request = _pb.AppendOutputRequest(id=evaluation_id, attempt=attempt, chunks=chunks)
        await self._call(self._stub.AppendOutput, request)

    async def complete(
        self,
        evaluation_id: str,
        attempt: int,
        state: State.ValueType,
        result: evaluation_pb2.EvaluationResult,
        chunks: Sequence[evaluation_pb2.OutputChunk] = (),
        timings: _pb.RunTimings | None = None,
    ) -> Record:
        """Store the last output ``chunks`` and record the terminal result in one write, with
        the run's measured ``timings``; a repeat of a write that already landed returns the
        evaluation."""
        request = _pb.CompleteEvaluationRequest(
            id=evaluation_id,
            attempt=attempt,
            state=state,
            result=result,
            chunks=chunks,
            timings=timings,
        )
        try:
            return (await self._call(self._stub.CompleteEvaluation, request)).record
        except FailedPrecondition as exc:
            if exc.reason != ALREADY_TERMINAL:
                raise
        # Terminal at our attempt: our earlier try (reply lost) or the dead-letter handler.
        return await self.get(evaluation_id)

    async def list_leases(self, limit: int = 1000) -> list[Record]:
        """The RUNNING evaluations storage says this executor id holds, expired or not."""
        request = _pb.ListLeasesRequest(executor_id=self.executor_id, limit=limit)
        return list((await self._call(self._stub.ListLeases, request)).records)

    async def end_lease(self, evaluation_id: str, attempt: int) -> bool:
        """Shorten the attempt's lease to nothing (fenced by the attempt, like a renewal), so
        the scheduler's reaper requeues it at its next pass; False if the attempt is over."""
        try:
            await self.renew(evaluation_id, attempt, _RELEASE_LEASE)
        except (FailedPrecondition, NotFound):
            return False
        return True

    async def release(self, evaluation_id: str, attempt: int, reason: str) -> bool:
        """Give a claimed evaluation back to QUEUED now, so another attempt can claim it.

        The contract has no release call: the attempt shortens its own lease to nothing and
        requeues itself (both fenced by the attempt). False if that did not work; the lease
        then runs out and the scheduler's reaper requeues it.
        """
        try:
            await self.renew(evaluation_id, attempt, _RELEASE_LEASE)
            for _ in range(_RELEASE_TRIES):
                try:
                    request = _pb.RequeueEvaluationRequest(
                        id=evaluation_id, attempt=attempt, reason=reason
                    )
                    await self._call(self._stub.RequeueEvaluation, request)
                    return True
                except FailedPrecondition as exc:
                    if exc.reason != LEASE_NOT_EXPIRED:
                        raise
                    await asyncio.sleep(0.002)
        except DomainError as exc:
            logger.warning(
                "could not give the evaluation back: %s", exc, extra={"evaluation": evaluation_id}
            )
        return False

    async def _call(
        self,
        method: Callable[..., Awaitable[R]],
        request: object,
        on_retry: Callable[[], None] | None = None,
    ) -> R:
        deadline = time.monotonic() + self.retry_budget
        failures = 0
        while True:
            try:
                return await method(request, timeout=self.timeout)
            except grpc.RpcError as exc:
                error = error_from_rpc(exc)
                failures += 1
                pause = backoff_delay(failures, base=_FIRST_BACKOFF, cap=_MAX_BACKOFF)
                if not isinstance(error, _TRANSIENT) or time.monotonic() + pause > deadline:
                    raise error from exc
                logger.info("storage call failed, retrying: %s", error.message)
            if on_retry is not None:
                on_retry()
            await asyncio.sleep(pause)
