"""The reconciler: every QUEUED evaluation ends up with its job on the work queue.

Each pass asks storage for QUEUED evaluations never published (a crash between commit and
publish, a publish that failed, a requeue) or last published more than ``reconcile_after`` ago,
and publishes their jobs. The work queue keeps one message per evaluation, so a job that is still
queued is found there, not doubled; one that went missing is queued again. Storage then records
the publications, which takes them off the next pass's list. An evaluation the reaper has just
requeued waits out its backoff instead (``held``): the reaper publishes it when that ends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from evalmesh_scheduler.jobs import JobQueue
from evalmesh_scheduler.storage_client import StorageClient

__all__ = ["Reconciler"]

logger = logging.getLogger(__name__)

_MAX_ROUNDS = 20  # pages per pass, so one pass over a huge backlog stays bounded


class Reconciler:
    """Publishes the jobs storage says are unpublished or stale."""

    def __init__(
        self,
        storage: StorageClient,
        jobs: JobQueue,
        *,
        republish_after: float,
        batch: int,
        held: Callable[[str], bool] = lambda evaluation_id: False,
    ) -> None:
        self.storage = storage
        self.jobs = jobs
        self.republish_after = republish_after
        self.batch = batch
        self.held = held

    async def run_once(self) -> int:
        """One pass; returns how many jobs it found queued or queued anew."""
        total = 0
        for _ in range(_MAX_ROUNDS):
            before = datetime.now(UTC) - timedelta(seconds=self.republish_after)
            listed = await self.storage.list_unpublished(before, self.batch)
            records = [r for r in listed if not self.held(r.evaluation.id)]
            published = await self.jobs.publish(records)
            await self.storage.record_publications(published)
            total += len(published)
            if len(published) < len(listed) or len(listed) < self.batch:
                break  # a publish failed (NATS away, queue full), some are held, or it is done
        if total:
            logger.info("reconciled jobs", extra={"published": total})
        return total
