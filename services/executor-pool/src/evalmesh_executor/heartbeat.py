"""A running attempt's heartbeat: renew the lease in storage, keep the message in progress.

Two clocks, two loops: the lease is renewed every third of its length (and the reply says
whether a client asked to cancel); ``in_progress()`` goes to JetStream every third of the
consumer's ack_wait (or of the lease, when shorter), so a job longer than ack_wait is never
redelivered while it runs. Neither waits for the other: a NATS link that stalls costs no lease. A
refused renewal means another attempt owns the evaluation: the run is stopped as LOST.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from evalmesh_common import DomainError, FailedPrecondition, NotFound
from evalmesh_executor.runs import RunHandle, Stop

__all__ = ["Heartbeat", "Renew"]

logger = logging.getLogger(__name__)

Renew = Callable[[str, int, float], Awaitable[bool]]
"""renew(evaluation_id, attempt, lease) -> whether a cancel was requested."""


class Heartbeat:
    """Keeps one attempt alive until :meth:`stop`."""

    def __init__(
        self,
        handle: RunHandle,
        renew: Renew,
        in_progress: Callable[[], Awaitable[None]],
        *,
        lease: float,
        ack_wait: float,
    ) -> None:
        self._handle = handle
        self._renew = renew
        self._in_progress = in_progress
        self._lease = lease
        self._tick = min(lease, ack_wait) / 3
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin beating in the background."""
        self._task = asyncio.create_task(self._run(), name=self._task_name())

    async def stop(self) -> None:
        """Stop beating; the lease then runs out unless the attempt ends first."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        # Two loops, so a stalled NATS link (where in_progress() blocks rather than fails)
        # never holds back the renewal that keeps storage from requeueing the run.
        touching = asyncio.create_task(self._touch_loop(), name=f"{self._task_name()}-nats")
        try:
            await self._lease_loop()
        finally:
            touching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await touching

    async def _lease_loop(self) -> None:
        while True:
            await asyncio.sleep(self._lease / 3)
            if not await self._renew_lease():
                return

    async def _touch_loop(self) -> None:
        while True:
            await asyncio.sleep(self._tick)
            await self._touch_message()

    async def _touch_message(self) -> None:
        # asyncio.timeout, not wait_for: Python 3.11's wait_for returns the answer instead of
        # raising when it is cancelled in the turn the answer lands, and the stop is lost.
        try:
            async with asyncio.timeout(self._tick):
                await self._in_progress()
        except Exception as exc:  # NATS away: the lease in storage still protects the run
            logger.warning("in_progress failed: %r", exc, extra=self._extra())

    def _task_name(self) -> str:
        return f"heartbeat-{self._handle.evaluation_id}"

    async def _renew_lease(self) -> bool:
        handle = self._handle
        try:
            cancel = await self._renew(handle.evaluation_id, handle.attempt, self._lease)
        except (FailedPrecondition, NotFound) as exc:
            logger.warning("lost the evaluation: %s", exc, extra=self._extra())
            handle.stop(Stop.LOST, str(exc))
            return False
        except DomainError as exc:
            logger.warning("lease renewal failed: %s", exc, extra=self._extra())
            return True
        if cancel:
            handle.stop(Stop.CANCEL, "cancel requested")
        return True

    def _extra(self) -> dict[str, object]:
        return {"evaluation": self._handle.evaluation_id, "attempt": self._handle.attempt}
