"""Retention: terminal evaluations older than the retention age are deleted, with their output.

The leader runs a pass every ``EVALMESH_RETENTION_INTERVAL`` (and at once when it starts to
lead), deleting evaluations that ended more than ``EVALMESH_RETENTION_AGE`` ago (30 days by
default; 0 keeps everything). Storage deletes in batches of :data:`BATCH` per transaction, so one
pass never holds the database's writer for long; a pass stops after its time budget and the next
one continues. ``ClusterService.PurgeEvaluations`` (the operator's ``evalmesh purge``) runs the
same batches, with a cutoff of the operator's choosing. QUEUED and RUNNING evaluations are never
deleted, however old (storage only selects terminal ones).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

from evalmesh_scheduler.storage_client import StorageClient

__all__ = ["BATCH", "Retention"]

logger = logging.getLogger(__name__)

BATCH = 500
PASS_BUDGET = 30.0  # seconds a scheduled pass may spend; the next pass continues


class Retention:
    """Deletes old terminal evaluations through storage's ``PurgeEvaluations``."""

    def __init__(self, storage: StorageClient, age: float) -> None:
        self.storage = storage
        self.age = age

    async def purge_before(self, end_time_before: datetime, budget: float) -> tuple[int, bool]:
        """Delete, batch by batch for about ``budget`` seconds, the terminal evaluations that
        ended before ``end_time_before``; return how many, and whether none is left."""
        deadline = time.monotonic() + budget
        purged = 0
        while True:
            deleted = await self.storage.purge(end_time_before, BATCH)
            purged += deleted
            if deleted < BATCH:
                return purged, True
            if time.monotonic() >= deadline:
                return purged, False

    async def run_once(self) -> None:
        """One scheduled pass (leader only); nothing while the age is 0."""
        if self.age <= 0:
            return
        cutoff = datetime.now(UTC) - timedelta(seconds=self.age)
        purged, complete = await self.purge_before(cutoff, PASS_BUDGET)
        if purged:
            logger.info(
                "retention deleted %d evaluations that ended before %s%s",
                purged,
                cutoff.isoformat(timespec="seconds"),
                "" if complete else "; more remain for the next pass",
                extra={"purged": purged},
            )
