"""A running attempt's heartbeat: renew the lease in storage, keep the message in progress.

Two clocks, one loop: the lease is renewed every third of its length (and the reply says
whether a client asked to cancel); ``in_progress()`` goes to JetStream every third of the
consumer's ack_wait, so a job longer than ack_wait is never redelivered while it runs. A
refused renewal means another attempt owns the evaluation: the run is stopped as LOST.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
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
        name = f"heartbeat-{self._handle.evaluation_id}"
        self._task = asyncio.create_task(self._run(), name=name)

    async def stop(self) -> None:
        """Stop beating; the lease then runs out unless the attempt ends first."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(self._tick)
            await self._touch_message()
            if time.monotonic() - renewed >= self._lease / 3 - self._tick / 2:
                if not await self._renew_lease():
                    return
                renewed = time.monotonic()

    async def _touch_message(self) -> None:
        try:
            await self._in_progress()
        except Exception as exc:  # NATS away: the lease in storage still protects the run
            logger.warning("in_progress failed: %s", exc, extra=self._extra())

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
