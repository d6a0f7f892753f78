"""Submitting and cancelling evaluations: storage first, then the work queue.

Submit is admission, commit, publish, record:

1. Admission: a healthy executor must offer the runtime (``runtimes``: else FAILED_PRECONDITION,
   RUNTIME_UNAVAILABLE), and the work queue must have room (and the tenant must be under its
   queued cap), else RESOURCE_EXHAUSTED; either way nothing is created. Checking before the
   commit is what makes "a full queue creates nothing" true; storage has no delete, so the
   alternative (create, fail to publish, undo) would leave a CANCELLED record that a retry with
   the same request_id returns.
2. Commit: storage creates the evaluation QUEUED, idempotent on (tenant, request_id). Submits
   that arrive together share a storage call (``creates``).
3. Publish the job. If that fails after the commit (NATS away, or a race past the hard stream
   limit) the evaluation stays QUEUED and unpublished; the answer is still OK because it is
   stored and the reconciler will publish it. A retry of a request whose job was already
   published publishes nothing: the stream holds one job per evaluation.
4. Note the publication (in the background, batched: see ``publications``), so the reconciler
   leaves it alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from evalmesh.scheduler.v1 import scheduler_service_pb2
from evalmesh.storage.v1 import record_pb2, storage_service_pb2
from evalmesh.v1 import evaluation_pb2
from evalmesh_common import FieldViolation, InvalidArgument, ResourceExhausted
from evalmesh_scheduler.creates import CreateBatcher
from evalmesh_scheduler.jobs import JobQueue
from evalmesh_scheduler.publications import PublicationLog
from evalmesh_scheduler.runtimes import RuntimeOffers
from evalmesh_scheduler.storage_client import Created, StorageClient

__all__ = ["Submitter", "needs_publication"]

logger = logging.getLogger(__name__)

Record = record_pb2.EvaluationRecord
State = evaluation_pb2.Evaluation.State
_TENANT_COUNT_TTL = 1.0
_TENANT_CACHE_SIZE = 10_000
SubmitRequest = scheduler_service_pb2.SubmitEvaluationRequest


def needs_publication(record: Record) -> bool:
    """A QUEUED evaluation whose job was never published."""
    return record.evaluation.state == State.STATE_QUEUED and not record.HasField("publish_time")


class Submitter:
    """Submit and cancel, over storage (the system of record) and the work queue."""

    def __init__(
        self,
        storage: StorageClient,
        jobs: JobQueue,
        *,
        publications: PublicationLog,
        max_batch: int,
        tenant_max_queued: int = 0,
        after_commit: Callable[[], None] = lambda: None,
        runtimes: RuntimeOffers | None = None,
    ) -> None:
        self.storage = storage
        self.runtimes = runtimes
        self.jobs = jobs
        self.publications = publications
        self.max_batch = max_batch
        self.tenant_max_queued = tenant_max_queued
        self._after_commit = after_commit
        self._queued: dict[str, tuple[float, int]] = {}  # tenant -> (valid until, QUEUED count)
        self._creates = CreateBatcher(storage, max_batch=max_batch)

    async def submit(self, request: SubmitRequest) -> Created:
        """Store and queue one evaluation; returns it and whether this call created it."""
        _check_request(request, "")
        self._require_runtimes([request])
        await self._admit(request.tenant, 1)
        record, created = await self._creates.create(
            request.tenant, request.request_id, request.spec, request.id
        )
        self._after_commit()
        if needs_publication(record):
            await self._publish_and_record([record])
        return record, created

    async def batch_submit(self, requests: Sequence[SubmitRequest]) -> list[Created]:
        """Store many evaluations in one storage transaction, then publish them together."""
        _check_batch(requests, self.max_batch)
        self._require_runtimes(requests)
        await self._admit(requests[0].tenant, len(requests))
        results = await self.storage.batch_create(
            [
                storage_service_pb2.CreateEvaluationRequest(
                    tenant=r.tenant, request_id=r.request_id, spec=r.spec, id=r.id
                )
                for r in requests
            ]
        )
        self._after_commit()
        await self._publish_and_record([rec for rec, _ in results if needs_publication(rec)])
        return results

    async def cancel(self, tenant: str, evaluation_id: str, reason: str) -> Record:
        """Cancel: QUEUED ends CANCELLED at once (its job is dropped), RUNNING is told to stop.

        Idempotent: a repeat, or a cancel of a terminal evaluation, changes nothing (a RUNNING
        one is sent its stop command again, in case the first was lost).
        """
        if not evaluation_id:
            raise InvalidArgument("id is required", [FieldViolation("id", "must not be empty")])
        record, before = await self.storage.cancel(tenant, evaluation_id, reason)
        state = record.evaluation.state
        if before == State.STATE_QUEUED and state == State.STATE_CANCELLED:
            await self.jobs.remove(record)
        elif state == State.STATE_RUNNING and record.evaluation.cancel_requested:
            await self.jobs.send_cancel(evaluation_id, record.cancel_reason or reason)
        return record

    def _require_runtimes(self, requests: Sequence[SubmitRequest]) -> None:
        if self.runtimes is not None:
            self.runtimes.require(request.spec.runtime for request in requests)

    async def _admit(self, tenant: str, count: int) -> None:
        await self.jobs.admit(count)
        if self.tenant_max_queued <= 0:
            return
        queued = await self._tenant_queued(tenant)
        if queued + count > self.tenant_max_queued:
            raise ResourceExhausted(
                f"tenant has {queued} evaluations queued (limit {self.tenant_max_queued})",
                reason="TENANT_QUEUE_FULL",
                retry_after=5.0,
                metadata={"queued": str(queued), "limit": str(self.tenant_max_queued)},
            )
        self._queued[tenant] = (self._queued[tenant][0], queued + count)

    async def _tenant_queued(self, tenant: str) -> int:
        """The tenant's QUEUED count, from storage at most once a second per tenant.

        Counting is a database query; a flooding tenant must not turn every submit into one.
        Within the second, this replica's own admissions are added as they happen.
        """
        now = time.monotonic()
        cached = self._queued.get(tenant)
        if cached is not None and cached[0] > now:
            return cached[1]
        if len(self._queued) > _TENANT_CACHE_SIZE:
            self._queued = {t: v for t, v in self._queued.items() if v[0] > now}
        stats = await self.storage.stats(tenant)
        queued = sum(q.depth for q in stats.queued)
        self._queued[tenant] = (now + _TENANT_COUNT_TTL, queued)
        return queued

    async def _publish_and_record(self, records: Sequence[Record]) -> None:
        self.publications.add(await self.jobs.publish(records))


def _check_request(request: SubmitRequest, prefix: str) -> None:
    violations = [
        FieldViolation(f"{prefix}{name}", "must not be empty")
        for name in ("tenant", "request_id")
        if not getattr(request, name)
    ]
    if not request.HasField("spec"):
        violations.append(FieldViolation(f"{prefix}spec", "is required"))
    if violations:
        raise InvalidArgument("the submit request is incomplete", violations)


def _check_batch(requests: Sequence[SubmitRequest], max_batch: int) -> None:
    if not requests:
        raise InvalidArgument("no requests", [FieldViolation("requests", "must not be empty")])
    if len(requests) > max_batch:
        raise InvalidArgument(
            f"too many requests ({len(requests)})",
            [FieldViolation("requests", f"at most {max_batch} per batch")],
        )
    tenant = requests[0].tenant
    for index, request in enumerate(requests):
        _check_request(request, f"requests[{index}].")
        if request.tenant != tenant:
            raise InvalidArgument(
                "every request of a batch must have the same tenant",
                [FieldViolation(f"requests[{index}].tenant", "must equal requests[0].tenant")],
            )
