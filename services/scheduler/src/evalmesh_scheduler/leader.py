"""Leader election over a JetStream KV lease, so one scheduler replica runs reconciler and reaper.

The key ``LEADER_KEY`` in ``LEADER_BUCKET`` names the leader. A candidate takes it with
``create`` (fails while the key exists); the leader renews it with ``update(last=revision)``
every ``ttl / 3`` (fails once anyone else has written it). The bucket's max age is the TTL, so the
key of a leader that died vanishes after at most ``ttl`` and a follower takes over. A replica
whose renewal failed (NATS briefly away) takes the key back while it still names it, so a
hiccup does not leave the cluster leaderless for a TTL.

A leader counts itself leader only until ``ttl`` after it *sent* its last successful write (a
monotonic clock; the server starts the key's TTL later than that), so its view always ends before
the key expires and two replicas never both act as leader on a healthy clock. The loops it runs
are fenced in storage anyway (requeue and complete carry the attempt; publications are
deduplicated by the stream), so even a stalled ex-leader cannot corrupt anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import nats.errors
from nats.js import JetStreamContext
from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from evalmesh_common.subjects import LEADER_BUCKET

__all__ = ["LEADER_KEY", "LeaderElection"]

logger = logging.getLogger(__name__)

LEADER_KEY = "scheduler"
_ERRORS = (nats.errors.Error, TimeoutError, OSError)

LeaderWork = Callable[[], Coroutine[Any, Any, None]]


class LeaderElection:
    """Campaigns for the lease forever and runs ``work`` only while holding it."""

    def __init__(
        self, js: JetStreamContext, instance_id: str, ttl: float, work: LeaderWork
    ) -> None:
        self._js = js
        self.instance_id = instance_id
        self.ttl = ttl
        self._work = work
        self._revision: int | None = None
        self._valid_until = 0.0
        self._task: asyncio.Task[None] | None = None

    @property
    def is_leader(self) -> bool:
        """Whether this replica holds an unexpired lease right now."""
        return self._revision is not None and time.monotonic() < self._valid_until

    async def run(self) -> None:
        """Campaign and renew until cancelled; on cancel, stop the work and resign."""
        kv: KeyValue | None = None
        try:
            while True:
                try:
                    kv = kv or await self._js.key_value(LEADER_BUCKET)
                    await self._step(kv)
                except _ERRORS as exc:
                    logger.warning("leader election: %s", exc)
                    await self._lose()
                await asyncio.sleep(self.ttl / 3)
        finally:
            await self._lose()
            if kv is not None:
                await self._resign(kv)

    async def _step(self, kv: KeyValue) -> None:
        sent = time.monotonic()
        if self._revision is None:
            self._revision = await self._claim(kv)
            if self._revision is None:
                return  # someone else leads
            logger.info("became the leader", extra={"instance": self.instance_id})
        else:
            try:
                self._revision = await kv.update(
                    LEADER_KEY, self.instance_id.encode(), last=self._revision
                )
            except KeyWrongLastSequenceError:
                logger.warning("lost the leader lease", extra={"instance": self.instance_id})
                await self._lose()
                return
        self._valid_until = sent + self.ttl
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._guarded_work(), name="leader-work")

    async def _claim(self, kv: KeyValue) -> int | None:
        """Take the lease if nobody holds it, or take it back if the key still names us.

        A renewal that failed on a NATS hiccup (a cluster member lost, its stream electing a
        new leader) ends this replica's leadership at once, but the key lives on until its TTL;
        without taking it back, nobody would lead until it expired. Taking it back is a write
        against the revision just read, so it fails if anyone else wrote the key meanwhile.
        """
        name = self.instance_id.encode()
        try:
            return await kv.create(LEADER_KEY, name)
        except KeyWrongLastSequenceError:
            pass
        try:
            entry = await kv.get(LEADER_KEY)
        except (KeyNotFoundError, KeyDeletedError):
            return None  # expired meanwhile: the next campaign creates it
        if entry.value != name or entry.revision is None:
            return None
        try:
            return await kv.update(LEADER_KEY, name, last=entry.revision)
        except KeyWrongLastSequenceError:
            return None

    async def _guarded_work(self) -> None:
        work = asyncio.create_task(self._work())
        try:
            while not work.done():
                if not self.is_leader:  # renewals failed for a whole TTL: stop acting
                    work.cancel()
                    break
                await asyncio.sleep(min(0.5, self.ttl / 10))
        finally:
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work

    async def _lose(self) -> None:
        self._revision = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _resign(self, kv: KeyValue) -> None:
        """Delete our key on a clean shutdown so a follower takes over at once."""
        with contextlib.suppress(*_ERRORS):
            entry = await kv.get(LEADER_KEY)
            if entry.value == self.instance_id.encode():
                await kv.purge(LEADER_KEY)
                logger.info("resigned the leadership", extra={"instance": self.instance_id})
