"""The reaper: RUNNING evaluations whose executor stopped renewing the lease.

Each pass lists expired leases (on the database clock). An evaluation that has used fewer than
``max_attempts`` attempts is requeued (the next claim is attempt + 1) and its job re-published;
one that has used them all ends ERROR (cause MAX_ATTEMPTS, fault PLATFORM) with the reason.
Both storage calls carry the attempt, so a pass that races an executor's late completion, or
another scheduler, changes nothing (FAILED_PRECONDITION is expected and skipped).

A lost attempt is a platform fault, so its job is re-published after an exponential backoff with
jitter (``evalmesh_common.backoff.backoff_delay`` of the attempts lost so far), on top of the lease
that had to expire first. Meanwhile the evaluation is QUEUED and unpublished in storage, and the
reconciler skips what ``holds`` says waits here. The delayed publish first drops the lost
attempt's old job (``JobQueue.replace``), which may still hold the evaluation's subject until its
``ack_wait`` runs out. If that publish fails, or this leader stops before it, nothing is recorded:
the evaluation is simply unpublished, and the reconciler publishes it at its next pass, seconds
later. (Recording the publication at the requeue, as this once did, hid a failed publish from
the reconciler for ``EVALMESH_RECONCILE_AFTER``, minutes.)

``wake`` runs a pass at once instead of at the next tick: an executor restarted under its old
identity releases its predecessor's leases and says so, and its evaluations should not wait.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time

from evalmesh.storage.v1 import record_pb2
from evalmesh.v1 import evaluation_pb2
from evalmesh_common import DomainError, FailedPrecondition, NotFound
from evalmesh_common.backoff import backoff_delay
from evalmesh_scheduler.jobs import JobQueue, describe
from evalmesh_scheduler.storage_client import StorageClient

__all__ = ["PUBLISH_TICK", "Reaper"]

logger = logging.getLogger(__name__)

PUBLISH_TICK = 0.05

Record = record_pb2.EvaluationRecord
State = evaluation_pb2.Evaluation.State


class Reaper:
    """Requeues or fails evaluations whose lease expired."""

    def __init__(
        self,
        storage: StorageClient,
        jobs: JobQueue,
        *,
        max_attempts: int,
        batch: int,
        backoff_base: float = 2.0,
        backoff_cap: float = 60.0,
    ) -> None:
        self.storage = storage
        self.jobs = jobs
        self.max_attempts = max_attempts
        self.batch = batch
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._later: list[tuple[float, int, Record]] = []  # (due, tiebreak, record), a heap
        self._order = itertools.count()
        self._held: set[str] = set()  # requeued (or being requeued), not yet published
        self.woken = asyncio.Event()  # set by ``wake``: run a pass now

    def holds(self, evaluation_id: str) -> bool:
        """Whether the evaluation waits for its delayed publish here."""
        return evaluation_id in self._held

    def wake(self) -> None:
        """Ask for a pass now (leases were released early)."""
        self.woken.set()

    async def publish_due(self) -> int:
        """Publish the requeued jobs whose backoff ended; returns how many were published.

        Run often (``PUBLISH_TICK``). A job whose publish fails stays unpublished in storage
        (each failure is logged with its cause), and the reconciler publishes it next pass.
        """
        due = []
        while self._later and self._later[0][0] <= time.monotonic():
            due.append(heapq.heappop(self._later)[2])
        if not due:
            return 0
        try:
            published = await self.jobs.replace(due)
        finally:
            self._held.difference_update(r.evaluation.id for r in due)
        if len(published) < len(due):
            logger.warning(
                "%d requeued jobs not published; the reconciler publishes them next pass",
                len(due) - len(published),
            )
        try:
            await self.storage.record_publications(published)
        except DomainError as exc:  # the jobs are queued; the reconciler finds them there
            logger.warning("could not record publications: %s", describe(exc))
        return len(published)

    async def run_once(self) -> int:
        """One pass; returns how many evaluations it requeued or ended."""
        self.woken.clear()
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
        # Held from before the requeue (which clears the publication) until the delayed
        # publish, so the reconciler does not publish it at once meanwhile.
        self._held.add(evaluation.id)
        try:
            requeued = await self.storage.requeue(evaluation.id, evaluation.attempt, why)
        except BaseException:
            self._held.discard(evaluation.id)
            raise
        if requeued.evaluation.state != State.STATE_QUEUED:  # a cancel was asked
            logger.warning("lease expired; evaluation was cancelled", extra=extra)
            self._held.discard(evaluation.id)
            await self.jobs.remove(requeued)
            return
        delay = backoff_delay(evaluation.attempt, base=self.backoff_base, cap=self.backoff_cap)
        heapq.heappush(self._later, (time.monotonic() + delay, next(self._order), requeued))
        logger.warning(
            "lease expired; evaluation requeued, job re-published in %.1f s",
            delay,
            extra=extra,
        )
