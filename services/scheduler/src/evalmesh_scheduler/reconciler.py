"""The reconciler: every QUEUED evaluation ends up with its job on the work queue.

Each pass does two things:

1. **Unpublished.** It asks storage for QUEUED evaluations never published (a crash between
   commit and publish, a publish that failed, a requeue) or last published more than
   ``republish_after`` ago, and publishes their jobs. The work queue keeps one message per
   evaluation, so a job that is still queued is found there, not doubled; one that went missing
   is queued again. Storage then records the publications, which takes them off the next pass's
   list. An evaluation the reaper has just requeued waits out its backoff instead (``held``):
   the reaper publishes it when that ends. One created less than ``check_after`` ago is left to
   the submit that is publishing it: taken for unpublished between its commit and the note of
   its publication, it would be published twice and noted twice.
2. **Presence.** It walks the QUEUED evaluations published more than ``check_after`` ago, in
   queue order, a few pages per pass (a cursor carries the walk over to the next pass and wraps
   at the end), and looks each job up on its subject. A job that is gone (acked away by an
   executor that never claimed it, dropped with a lost NATS store) or stranded (still in the
   stream but below its consumer's ack floor, so never delivered again) is published again at
   once under a new ``Nats-Msg-Id``. Lookups create nothing on the server and write nothing to the
   database; only a missing job costs a publish and a row update. So a backlog of up to
   ``pages * batch`` jobs is fully checked every pass, and a larger one every few passes.

Either way a QUEUED evaluation without a live job is queued again within seconds, not after
``republish_after``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from evalmesh.storage.v1 import record_pb2
from evalmesh_common import InvalidArgument
from evalmesh_scheduler.jobs import JobQueue, republish_id
from evalmesh_scheduler.storage_client import StorageClient

__all__ = ["Reconciler"]

logger = logging.getLogger(__name__)

_MAX_ROUNDS = 20  # pages per pass, so one pass over a huge backlog stays bounded
PRESENCE_PAGES = 4  # presence pages per pass: bounded NATS lookups (pages * batch) per interval
_LOGGED_IDS = 20

Record = record_pb2.EvaluationRecord


class Reconciler:
    """Publishes the jobs storage says are unpublished or stale, and those gone from the queue."""

    def __init__(
        self,
        storage: StorageClient,
        jobs: JobQueue,
        *,
        republish_after: float,
        batch: int,
        check_after: float = 5.0,
        presence_pages: int = PRESENCE_PAGES,
        held: Callable[[str], bool] = lambda evaluation_id: False,
    ) -> None:
        self.storage = storage
        self.jobs = jobs
        self.republish_after = republish_after
        self.batch = batch
        self.check_after = check_after
        self.presence_pages = presence_pages
        self.held = held
        self._cursor = ""  # where the presence walk resumes ("" = the head of the queue)

    async def run_once(self) -> int:
        """One pass; returns how many jobs it found queued or queued anew."""
        total = await self._publish_unpublished()
        return total + await self._check_presence()

    async def _publish_unpublished(self) -> int:
        total = 0
        for _ in range(_MAX_ROUNDS):
            before = datetime.now(UTC) - timedelta(seconds=self.republish_after)
            listed = await self.storage.list_unpublished(before, self.batch)
            young = datetime.now(UTC) - timedelta(seconds=self.check_after)
            records = [
                r
                for r in listed
                if not self.held(r.evaluation.id) and not _being_submitted(r, young)
            ]
            published = await self.jobs.publish(records)
            await self.storage.record_publications(published)
            total += len(published)
            if len(published) < len(listed) or len(listed) < self.batch:
                break  # a publish failed (NATS away, queue full), some are held, or it is done
        if total:
            logger.info("reconciled jobs", extra={"published": total})
        return total

    async def _check_presence(self) -> int:
        total = 0
        for _ in range(self.presence_pages):
            start = self._cursor
            before = datetime.now(UTC) - timedelta(seconds=self.check_after)
            try:
                page, self._cursor = await self.storage.list_queued(before, self.batch, start)
            except InvalidArgument:  # a cursor storage no longer accepts: start over
                self._cursor = ""
                raise
            missing = await self.jobs.missing([r for r in page if not self.held(r.evaluation.id)])
            if missing:
                published = await self._publish_missing(missing)
                total += published
                if published < len(missing):
                    self._cursor = start  # NATS away or the queue full: this page again next pass
                    break
            if not self._cursor:
                break  # the walk reached the end; the next pass starts at the head
        return total

    async def _publish_missing(self, missing: list[Record]) -> int:
        published = await self.jobs.publish(missing, msg_id=republish_id)
        await self.storage.record_publications(published)
        logger.warning(
            "%d jobs of QUEUED evaluations were missing from the work queue; %d published again",
            len(missing),
            len(published),
            extra={"evaluations": [r.evaluation.id for r in missing[:_LOGGED_IDS]]},
        )
        return len(published)


def _being_submitted(record: Record, young: datetime) -> bool:
    """Never published and created after ``young``: its submit may be publishing it now."""
    created = record.evaluation.create_time.ToDatetime(UTC)
    return not record.HasField("publish_time") and created > young
