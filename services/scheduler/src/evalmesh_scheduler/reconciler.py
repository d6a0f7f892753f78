"""The reconciler: every QUEUED evaluation ends up with its job on the work queue.

Each pass asks storage for QUEUED evaluations never published (a crash between commit and
publish, a publish that failed, a requeue) or last published more than ``reconcile_after`` ago,
and publishes their jobs. The work queue keeps one message per evaluation, so a job that is still
queued is found there, not doubled; one that went missing is queued again. Storage then records
the publications, which takes them off the next pass's list.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from evalmesh_scheduler.jobs import JobQueue
from evalmesh_scheduler.storage_client import StorageClient

__all__ = ["Reconciler"]

logger = logging.getLogger(__name__)

_MAX_ROUNDS = 20  # pages per pass, so one pass over a huge backlog stays bounded


class Reconciler:
    """Publishes the jobs storage says are unpublished or stale."""

    def __init__(
        self, storage: StorageClient, jobs: JobQueue, *, republish_after: float, batch: int
    ) -> None:
        self.storage = storage
        self.jobs = jobs
        self.republish_after = republish_after
        self.batch = batch

    async def run_once(self) -> int:
        """One pass; returns how many jobs it found queued or queued anew."""
        total = 0
        for _ in range(_MAX_ROUNDS):
            before = datetime.now(UTC) - timedelta(seconds=self.republish_after)
            records = await self.storage.list_unpublished(before, self.batch)
            if not records:
                break
            published = await self.jobs.publish(records)
            await self.storage.record_publications(published)
            total += len(published)
            if len(published) < len(records) or len(records) < self.batch:
                break  # a publish failed (NATS away, queue full) or the list is done
        if total:
            logger.info("reconciled jobs", extra={"published": total})
        return total
