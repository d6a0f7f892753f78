"""The scheduler's background work: topology, leader election, reconciler, reaper, dead letters.

Started once by the app. It waits for NATS, creates or updates the topology (retrying until it
succeeds; health stays NOT_SERVING until then), then runs:

- the topology check, every ``topology_check_interval`` (every second while it fails), so a
  NATS store that lost the streams gets them back without a restart;
- the leader election, whose leader alone runs the reconciler, the reaper and the retention
  pass (every replica
  listens for executors that released their leases early and wakes its reaper, which only
  runs while it leads);
- the dead-letter handler on every replica: the advisories consumer is a shared durable work
  queue, so each advisory is handled by one replica.

``stop`` (a STOP_WORK shutdown hook) cancels all of it and unsubscribes, before NATS drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from evalmesh_common.messaging import NatsConnection
from evalmesh_common.subjects import (
    DEAD_LETTER_CONSUMER,
    JOB_ADVISORIES_STREAM,
    LEASES_RELEASED_SUBJECT,
)
from evalmesh_scheduler.config import LoopConfig
from evalmesh_scheduler.deadletters import DeadLetters
from evalmesh_scheduler.leader import LeaderElection
from evalmesh_scheduler.loops import every
from evalmesh_scheduler.reaper import PUBLISH_TICK, Reaper
from evalmesh_scheduler.reconciler import Reconciler
from evalmesh_scheduler.retention import Retention
from evalmesh_scheduler.topology import Topology

__all__ = ["Background", "keep_checking"]

logger = logging.getLogger(__name__)

_RETRY = 1.0
_ADVISORY_BATCH = 16
_ADVISORY_RETRY_DELAY = 5.0


async def keep_checking(
    check: Callable[[], Awaitable[bool]],
    interval: float,
    retry: float,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Run ``check`` every ``interval`` seconds while it passes and every ``retry`` seconds
    while it fails: a check that failed during a NATS leader election is tried again within a
    second, so the scheduler (and every gateway with it) is not NOT_SERVING for a whole interval.
    """
    passed = True
    while True:
        await sleep(interval if passed else retry)
        passed = await check()


class Background:
    """Owns the scheduler's long-running tasks."""

    def __init__(
        self,
        nats: NatsConnection,
        js: JetStreamContext,
        topology: Topology,
        loops: LoopConfig,
        *,
        reconciler: Reconciler,
        reaper: Reaper,
        dead: DeadLetters,
        retention: Retention,
        instance_id: str,
        leader_ttl: float,
    ) -> None:
        self.nats = nats
        self._js = js
        self.topology = topology
        self.loops = loops
        self.reconciler = reconciler
        self.reaper = reaper
        self.dead = dead
        self.retention = retention
        self.election = LeaderElection(js, instance_id, leader_ttl, work=self.leader_work)
        self.ready = False
        self._main: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin in the background; returns at once."""
        if self._main is None:
            self._main = asyncio.create_task(self._run(), name="scheduler-background")

    def is_ready(self) -> bool:
        """Whether the topology exists (as of the last check)."""
        return self.ready

    async def probe(self) -> bool:
        """Health dependency: the topology exists."""
        return self.ready

    async def stop(self) -> None:
        """Cancel every background task; idempotent."""
        task, self._main = self._main, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def leader_work(self) -> None:
        """What only the leader runs: the reconciler, the reaper and retention."""
        async with asyncio.TaskGroup() as group:
            group.create_task(
                every(self.loops.reconcile_interval, "reconciler", self.reconciler.run_once)
            )
            group.create_task(
                every(self.loops.reap_interval, "reaper", self.reaper.run_once, self.reaper.woken)
            )
            group.create_task(every(PUBLISH_TICK, "delayed publish", self.reaper.publish_due))
            group.create_task(
                every(self.loops.retention_interval, "retention", self.retention.run_once)
            )

    async def _run(self) -> None:
        try:
            await self.nats.wait_connected()
            await self.nats.client.subscribe(LEASES_RELEASED_SUBJECT, cb=self._leases_released)
            await self._ensure_topology_until_done()
            async with asyncio.TaskGroup() as group:
                group.create_task(self._check_topology())
                group.create_task(self.election.run())
                group.create_task(self._handle_advisories())
        except Exception:  # a bug: say so loudly, and stop claiming to be ready
            logger.exception("the scheduler's background work crashed")
            self.ready = False

    async def _leases_released(self, message: Msg) -> None:
        logger.info(
            "an executor released its leases early; reaping now",
            extra={"executor": message.data.decode(errors="replace")[:256]},
        )
        self.reaper.wake()

    async def _ensure_topology_until_done(self) -> None:
        while not self.ready:
            await self._ensure_topology()
            if not self.ready:
                await asyncio.sleep(_RETRY)

    async def _ensure_topology(self) -> None:
        try:
            await self.topology.ensure(self._js)
        except (nats.errors.Error, TimeoutError, OSError) as exc:
            if self.ready:
                logger.warning("the JetStream topology check failed: %s", exc)
            self.ready = False
        else:
            if not self.ready:
                logger.info("the JetStream topology is ready")
            self.ready = True

    async def _check_topology(self) -> None:
        async def check() -> bool:
            await self._ensure_topology()
            return self.ready

        await keep_checking(check, self.loops.topology_check_interval, _RETRY)

    async def _handle_advisories(self) -> None:
        subscription = None
        try:
            while True:
                try:
                    subscription = subscription or await self._js.pull_subscribe_bind(
                        DEAD_LETTER_CONSUMER, stream=JOB_ADVISORIES_STREAM
                    )
                    messages = await subscription.fetch(_ADVISORY_BATCH, timeout=1.0)
                except (nats.errors.TimeoutError, TimeoutError):
                    continue
                except nats.errors.Error as exc:
                    logger.warning("reading advisories failed: %s", exc)
                    await asyncio.sleep(_RETRY)
                    continue
                for message in messages:
                    await self._handle_advisory(message)
        finally:
            if subscription is not None:
                with contextlib.suppress(nats.errors.Error):
                    await subscription.unsubscribe()

    async def _handle_advisory(self, message: Msg) -> None:
        try:
            await self.dead.handle_advisory(message.data)
        except Exception as exc:
            logger.warning("dead-lettering failed; will retry: %s", exc)
            with contextlib.suppress(nats.errors.Error):
                await message.nak(delay=_ADVISORY_RETRY_DELAY)
            return
        with contextlib.suppress(nats.errors.Error):
            await message.ack()
