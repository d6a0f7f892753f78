"""The reaper: RUNNING evaluations whose executor stopped renewing the lease.

Each pass lists expired leases (on the database clock). An evaluation that has used fewer than
``max_attempts`` attempts is requeued (the next claim is attempt + 1) and its job re-published;
one that has used them all ends ERROR (cause MAX_ATTEMPTS, fault PLATFORM) with the reason.
Both storage calls carry the attempt, so a pass that races an executor's late completion, or
another scheduler, changes nothing (FAILED_PRECONDITION is expected and skipped).
"""

from __future__ import annotations

import logging

from evalmesh.storage.v1 import record_pb2
from evalmesh.v1 import evaluation_pb2
from evalmesh_common import FailedPrecondition, NotFound
from evalmesh_scheduler.jobs import JobQueue
from evalmesh_scheduler.storage_client import StorageClient

__all__ = ["Reaper"]

logger = logging.getLogger(__name__)

Record = record_pb2.EvaluationRecord
State = evaluation_pb2.Evaluation.State


class Reaper:
    """Requeues or fails evaluations whose lease expired."""

    def __init__(
        self, storage: StorageClient, jobs: JobQueue, *, max_attempts: int, batch: int
    ) -> None:
        self.storage = storage
        self.jobs = jobs
        self.max_attempts = max_attempts
        self.batch = batch

    async def run_once(self) -> int:
        """One pass; returns how many evaluations it requeued or ended."""
        handled = 0
        for record in await self.storage.list_expired_leases(self.batch):
            try:
                await self._reap(record)
                handled += 1
            except (FailedPrecondition, NotFound) as exc:
                logger.info("lease already settled: %s", exc)
        return handled

    async def _reap(self, record: Record) -> None:
        evaluation = record.evaluation
        why = (
            f"attempt {evaluation.attempt} lost: executor {evaluation.executor_id or '?'} "
            "stopped renewing its lease"
        )
        extra = {"evaluation": evaluation.id, "attempt": evaluation.attempt}
        if evaluation.attempt >= self.max_attempts:
            result = evaluation_pb2.EvaluationResult(
                cause=evaluation_pb2.TERMINATION_CAUSE_MAX_ATTEMPTS,
                fault=evaluation_pb2.FAULT_PLATFORM,
                detail=f"{why}; all {self.max_attempts} attempts were lost to platform faults",
            )
            await self.storage.complete(
                evaluation.id, evaluation.attempt, State.STATE_ERROR, result
            )
            logger.warning("attempts exhausted; evaluation ended ERROR", extra=extra)
            return
        requeued = await self.storage.requeue(evaluation.id, evaluation.attempt, why)
        logger.warning("lease expired; evaluation requeued", extra=extra)
        if requeued.evaluation.state == State.STATE_QUEUED:
            published = await self.jobs.publish([requeued])
            await self.storage.record_publications(published)
