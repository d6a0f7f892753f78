"""One NATS connection per service: connects in the background, reconnects forever, drains last.

A service must start serving health (NOT_SERVING) even while NATS is down, so the connection is
made by a background task and :meth:`NatsConnection.probe` is the health dependency. JetStream
contexts are taken from :attr:`NatsConnection.client` once :meth:`wait_connected` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, NoKeysError

__all__ = ["NatsConnection", "bucket_values"]

logger = logging.getLogger(__name__)


class NatsConnection:
    """A reconnecting NATS client owned by one service."""

    def __init__(self, url: str, name: str, drain_timeout: float = 5.0) -> None:
        self.url = url
        self.name = name
        self.drain_timeout = drain_timeout
        self.client = Client()
        self._connecting: asyncio.Task[None] | None = None
        self._on_connect: list[Callable[[Client, bool], Awaitable[None]]] = []

    def on_connect(self, callback: Callable[[Client, bool], Awaitable[None]]) -> None:
        """Run ``callback(client, reconnected)`` after the first connection and each reconnection
        (subscriptions survive a reconnection; what was published meanwhile did not arrive)."""
        self._on_connect.append(callback)

    def start(self) -> None:
        """Begin connecting in the background; returns at once."""
        if self._connecting is None:
            self._connecting = asyncio.create_task(self._connect(), name=f"nats-{self.name}")

    async def wait_connected(self) -> Client:
        """Wait for the first successful connection and return the client."""
        self.start()
        assert self._connecting is not None
        await asyncio.shield(self._connecting)
        return self.client

    async def probe(self) -> bool:
        """Health dependency: True while the connection is up."""
        return bool(self.client.is_connected)

    async def close(self) -> None:
        """Drain (flush publishes, finish subscriptions) within the timeout, then close."""
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
        if self.client.is_connected:
            try:
                await asyncio.wait_for(self.client.drain(), self.drain_timeout)
            except (TimeoutError, nats.errors.Error) as error:
                logger.warning("NATS drain did not finish: %s", error)
        if not self.client.is_closed:
            await self.client.close()

    async def _connect(self) -> None:
        await self.client.connect(
            servers=[self.url],
            name=self.name,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            connect_timeout=2,
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
        )
        logger.info("connected to NATS", extra={"nats_url": self.url})
        await self._connected(reconnected=False)

    async def _connected(self, *, reconnected: bool) -> None:
        for callback in self._on_connect:
            try:
                await callback(self.client, reconnected)
            except Exception:  # one listener's failure must not stop the others or the client
                logger.exception("a NATS connection callback failed")

    async def _on_error(self, error: Exception) -> None:
        logger.warning("NATS: %s", error)

    async def _on_disconnected(self) -> None:
        logger.warning("disconnected from NATS")

    async def _on_reconnected(self) -> None:
        logger.info("reconnected to NATS")
        await self._connected(reconnected=True)


async def bucket_values(js: JetStreamContext, bucket: str) -> list[bytes]:
    """The current value of every key in a KV bucket (keys that expire meanwhile are skipped)."""
    kv = await js.key_value(bucket)
    try:
        keys = await kv.keys()
    except NoKeysError:
        return []
    values = []
    for key in keys:
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            continue  # expired or deleted between the listing and the read
        values.append(entry.value or b"")
    return values
