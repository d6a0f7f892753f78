"""Noting published jobs in storage in batches, off the submit's path.

A submit answers once its job is in the work queue; the note that it was published (which keeps
the reconciler away from it) is written in the background, many ids per storage write. Until the
note lands the evaluation looks unpublished, so a reconciler pass in between publishes its job
again: harmless, since the stream keeps one job per evaluation and answers "already queued". A
crash before the note lands costs the same and nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from evalmesh_common import DomainError
from evalmesh_scheduler.storage_client import StorageClient

__all__ = ["PublicationLog"]

logger = logging.getLogger(__name__)

_RETRY_AFTER = 1.0


class PublicationLog:
    """Collects published evaluation ids and records them together."""

    def __init__(
        self,
        storage: StorageClient,
        *,
        interval: float = 0.02,
        max_batch: int = 500,
        max_pending: int = 100_000,
    ) -> None:
        self._storage = storage
        self._interval = interval
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._pending: dict[str, None] = {}  # insertion-ordered set
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def add(self, ids: Iterable[str]) -> None:
        """Queue ``ids`` to be recorded soon."""
        for evaluation_id in ids:
            if len(self._pending) >= self._max_pending:
                # Storage has been away for long: the reconciler records these instead.
                self._pending.pop(next(iter(self._pending)))
            self._pending[evaluation_id] = None
        if self._pending:
            self._wake.set()

    def start(self) -> None:
        """Begin recording in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="publication-log")

    async def stop(self) -> None:
        """Record what is queued (one try), then stop; idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while self._pending and await self._record_batch():
            pass

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self._interval)  # let a burst of submits share one write
            self._wake.clear()
            while self._pending:
                if not await self._record_batch():
                    await asyncio.sleep(_RETRY_AFTER)

    async def _record_batch(self) -> bool:
        batch = list(self._pending)[: self._max_batch]
        try:
            await self._storage.record_publications(batch)
        except DomainError as exc:
            logger.warning("could not record %d publications yet: %s", len(batch), exc)
            return False
        for evaluation_id in batch:
            self._pending.pop(evaluation_id, None)
        return True
