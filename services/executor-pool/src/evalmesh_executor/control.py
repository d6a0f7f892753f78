"""Control messages over core NATS: cancels (every executor listens) and drains (one subject
per instance).

Cancels are best effort: a lost command is caught by the next lease renewal, whose reply says
that a cancel was requested. Stopping sets the run's cancel event; the sandbox kills the job's
whole process tree within a second and the evaluation ends CANCELLED with its partial output.
A drain is a request with a reply, so the operator who asked learns whether it began.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import nats.errors
from google.protobuf.message import DecodeError
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from evalmesh.executor.v1 import executor_service_pb2, pool_pb2
from evalmesh.scheduler.v1 import job_pb2
from evalmesh_common.subjects import CANCEL_SUBJECT, drain_subject
from evalmesh_executor.runs import RunRegistry, Stop

__all__ = ["CancelListener", "DrainListener"]

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


class DrainListener:
    """Answers drain requests on this instance's own subject (``drain_subject``).

    The request is a serialized ``executor.v1.DrainRequest``; ``begin`` starts the drain in the
    background (the instance is draining when it returns) and the reply is this instance's
    ``PoolStatus`` right after, so the caller sees the drain began. Its progress then shows in
    the heartbeats: the runs end or are given back, and the instance stays drained until it is
    restarted.
    """

    def __init__(
        self,
        client: Client,
        instance_id: str,
        begin: Callable[[float | None], None],
        status: Callable[[], pool_pb2.PoolStatus],
    ) -> None:
        self._client = client
        self._subject = drain_subject(instance_id)
        self._begin = begin
        self._status = status
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        """Subscribe (once)."""
        if self._subscription is None:
            self._subscription = await self._client.subscribe(self._subject, cb=self._on_request)

    async def stop(self) -> None:
        """Unsubscribe."""
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            with contextlib.suppress(nats.errors.Error):
                await subscription.unsubscribe()

    async def _on_request(self, msg: Msg) -> None:
        try:
            request = executor_service_pb2.DrainRequest.FromString(msg.data)
        except DecodeError:
            logger.warning("ignoring an undecodable drain request")
            return
        grace = request.grace.ToNanoseconds() / 1e9 if request.HasField("grace") else None
        logger.warning("draining on request", extra={"grace": grace})
        self._begin(grace)
        with contextlib.suppress(nats.errors.Error):
            await msg.respond(self._status().SerializeToString())
