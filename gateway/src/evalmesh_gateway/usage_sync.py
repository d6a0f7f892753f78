"""Exchange :mod:`evalmesh_gateway.usage` reports with the other gateways over core NATS.

Core NATS, not JetStream: a report is news for a second at most and the next one supersedes
it, so nothing is stored, acknowledged or replicated. Reports of changes are sent when there is
news, at most one per ``interval``; an idle gateway wakes only for its heartbeat (a full report
once a second). A gateway that has heard of no other stays quiet apart from the hello it says on
connecting: a gateway that starts later says hello too, and is answered with a full report, so a
lone gateway (the one-host default) spends nothing on a peer that does not exist. While NATS is
away each gateway enforces the limits on its own traffic alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from evalmesh.gateway.v1 import usage_pb2
from evalmesh_common.messaging import NatsConnection
from evalmesh_common.subjects import TENANT_USAGE_SUBJECT
from evalmesh_gateway.usage import ClusterUsage

__all__ = ["UsageSync"]

logger = logging.getLogger(__name__)

_NATS_ERRORS = (nats.errors.Error, TimeoutError, OSError)
Reports = list[usage_pb2.GatewayUsage]


class UsageSync:
    """Publishes this gateway's reports (changes within ``interval``, everything every
    ``heartbeat``) and applies the reports of the others."""

    def __init__(
        self,
        nats: NatsConnection,
        usage: ClusterUsage,
        interval: float,
        heartbeat: float = 1.0,
    ) -> None:
        self._nats = nats
        self.usage = usage
        self.interval = interval
        self.heartbeat = heartbeat
        self._subscription: Subscription | None = None
        self._heartbeats: asyncio.Task[None] | None = None
        self._pending: asyncio.TimerHandle | None = None
        self._last = 0.0
        self._sending: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Listen from the first connection on, and report in the background."""
        self._nats.on_connect(self._connected)
        self.usage.notify(self._news)
        if self._heartbeats is None:
            self._heartbeats = asyncio.create_task(self._beat(), name="tenant-usage-heartbeat")

    async def close(self) -> None:
        """Stop reporting (the subscription ends with the connection's drain)."""
        if self._pending is not None:
            self._pending.cancel()
        task, self._heartbeats = self._heartbeats, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _news(self) -> None:
        """A tenant changed: report it one interval after the last report, or now."""
        if self._pending is None:
            delay = max(0.0, self._last + self.interval - time.monotonic())
            self._pending = asyncio.get_running_loop().call_later(delay, self._send_changes)

    def _send_changes(self) -> None:
        self._pending = None
        if self.usage.peers:  # alone, the news waits in the next full report a hello asks for
            self._send(self.usage.report(full=False))

    def _send(self, reports: Reports) -> None:
        self._last = time.monotonic()
        if reports:
            task = asyncio.create_task(self._publish(reports))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _connected(self, client: Client, reconnected: bool) -> None:
        if self._subscription is None:  # a subscription survives reconnections
            self._subscription = await client.subscribe(TENANT_USAGE_SUBJECT, cb=self._on_message)
        self._send(self.usage.report(full=True, hello=True))

    async def _on_message(self, message: Msg) -> None:
        report = usage_pb2.GatewayUsage()
        try:
            report.ParseFromString(message.data)
        except Exception:
            logger.warning("dropped a tenant usage report that does not parse")
            return
        if self.usage.apply(report):
            self._send(self.usage.report(full=True))

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            self.usage.sweep()
            if self.usage.peers:
                self._send(self.usage.report(full=True))

    async def _publish(self, reports: Reports) -> None:
        client = self._nats.client
        if not client.is_connected:
            return  # the first report after the reconnection is a full one
        for report in reports:
            try:
                await client.publish(TENANT_USAGE_SUBJECT, report.SerializeToString())
            except _NATS_ERRORS as exc:
                logger.warning("tenant usage report not sent: %s", exc)
                return
