"""Cancel commands: every executor listens on the control subject; the holder stops the run.

Core NATS, best effort: a lost command is caught by the next lease renewal, whose reply says
that a cancel was requested. Stopping sets the run's cancel event; the sandbox kills the job's
whole process tree within a second and the evaluation ends CANCELLED with its partial output.
"""

from __future__ import annotations

import contextlib
import logging

import nats.errors
from google.protobuf.message import DecodeError
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from evalmesh.scheduler.v1 import job_pb2
from evalmesh_common.subjects import CANCEL_SUBJECT
from evalmesh_executor.runs import RunRegistry, Stop

__all__ = ["CancelListener"]

logger = logging.getLogger(__name__)


class CancelListener:
    """Subscribes to CANCEL_SUBJECT and stops the named run if this instance holds it."""

    def __init__(self, client: Client, runs: RunRegistry) -> None:
        self._client = client
        self._runs = runs
        self._subscription: Subscription | None = None

    @property
    def listening(self) -> bool:
        """True while subscribed."""
        return self._subscription is not None

    async def start(self) -> None:
        """Subscribe (once)."""
        if self._subscription is None:
            self._subscription = await self._client.subscribe(CANCEL_SUBJECT, cb=self._on_command)

    async def stop(self) -> None:
        """Unsubscribe."""
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            with contextlib.suppress(nats.errors.Error):
                await subscription.unsubscribe()

    async def _on_command(self, msg: Msg) -> None:
        try:
            command = job_pb2.CancelCommand.FromString(msg.data)
        except DecodeError:
            logger.warning("ignoring an undecodable cancel command")
            return
        reason = command.reason or "cancelled"
        if self._runs.stop(command.evaluation_id, Stop.CANCEL, reason):
            logger.info("cancelling on request", extra={"evaluation": command.evaluation_id})
