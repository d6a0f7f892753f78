"""One NATS connection per service: connects in the background, reconnects forever, drains last.

A service must start serving health (NOT_SERVING) even while NATS is down, so the connection is
made by a background task and :meth:`NatsConnection.probe` is the health dependency. JetStream
contexts are taken from :attr:`NatsConnection.client` once :meth:`wait_connected` returns.
:class:`BucketView` reads a KV bucket through one long-lived watch, so frequent reads create
nothing on the server. :func:`inject_trace_context` and :func:`extract_trace_context` carry a
trace across a message in its headers (W3C ``traceparent``), for services whose traces are on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import nats
import nats.errors
from nats.aio.client import Client
from nats.js.kv import KV_DEL, KV_PURGE

if TYPE_CHECKING:
    from opentelemetry.context import Context

__all__ = [
    "BucketView",
    "NatsConnection",
    "extract_trace_context",
    "inject_trace_context",
    "server_urls",
]

logger = logging.getLogger(__name__)

_NO_TTL = 365 * 24 * 3600.0  # a bucket without a TTL: entries never expire
_NATS_ERRORS = (nats.errors.Error, TimeoutError, OSError)
# How long a read waits for the watch to deliver writes made before it; then it answers anyway.
_CATCH_UP = 1.0
# The watch's consumer outlives a lost connection this long; the client recreates it after.
_WATCH_INACTIVE = 60.0


def server_urls(url: str) -> list[str]:
    """The servers of ``url``: one URL, or several separated by commas (the members of a
    cluster; the client also learns the others from the first one it reaches)."""
    urls = [part.strip() for part in url.split(",") if part.strip()]
    if not urls:
        raise ValueError("no NATS server URL given")
    return urls


def inject_trace_context(headers: dict[str, str]) -> dict[str, str]:
    """``headers`` with the current span's W3C trace context added (``traceparent``, and
    ``tracestate`` when there is one). Called only by services whose traces are on: the
    OpenTelemetry API is imported on first use, so a mesh without traces never loads it."""
    from opentelemetry import propagate

    propagate.inject(headers)
    return headers


def extract_trace_context(headers: Mapping[str, str] | None) -> Context:
    """The trace context a message's ``headers`` carry (an empty one when they carry none), to
    parent the span that handles the message."""
    from opentelemetry import propagate

    return propagate.extract(headers or {})


class NatsConnection:
    """A reconnecting NATS client owned by one service (of a cluster: ``url`` may list several
    servers, separated by commas)."""

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
            servers=server_urls(self.url),
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


class BucketView:
    """A local, live copy of a KV bucket, fed by one watch kept open for the process's life.

    Listing a bucket's keys (``KeyValue.keys``) creates a server-side consumer per call that
    outlives the call by minutes; a process that reads often (queue positions, the pool's size)
    then piles consumers up until the server refuses to create more. Here one ordered watch
    (its consumer recreated by the client only if it stalls) keeps a dictionary up to date, and
    a read creates nothing on the server: it asks for the bucket's last sequence (a plain
    stream-info request) and waits, briefly, until the watch has delivered up to it, so a read
    sees every write made before it began. Entries that age out of the bucket (its TTL) send no
    update, so the view drops an entry once it is older than the bucket's TTL.

    ``values`` waits for the first full snapshot (up to ``timeout``, else ``TimeoutError``);
    after that it answers from the view, which stays as it was while NATS is away and loses
    entries as they expire.
    """

    def __init__(
        self, nats: NatsConnection, bucket: str, *, retry: float = 1.0, timeout: float = 5.0
    ) -> None:
        self.nats = nats
        self.bucket = bucket
        self.retry = retry
        self.timeout = timeout
        # key -> (value, when it expires on the monotonic clock)
        self._entries: dict[str, tuple[bytes, float]] = {}
        self._seen = 0  # the bucket stream's sequence the view is up to date with
        self._advanced = asyncio.Event()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin following the bucket in the background; idempotent."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"bucket-view-{self.bucket}")

    async def close(self) -> None:
        """Stop following (the watch is unsubscribed); idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def values(self) -> list[bytes]:
        """The current value of every live key, from the local view."""
        self.start()
        await asyncio.wait_for(self._ready.wait(), self.timeout)
        await self._catch_up()
        now = time.monotonic()
        expired = [key for key, (_, expires) in self._entries.items() if expires <= now]
        for key in expired:
            del self._entries[key]
        return [value for value, _ in self._entries.values()]

    def current(self) -> list[bytes] | None:
        """The view as it is, without waiting or asking the server anything: None until the
        first snapshot is in. For hot paths that can act on a view a few milliseconds old."""
        self.start()
        if not self._ready.is_set():
            return None
        now = time.monotonic()
        return [value for value, expires in self._entries.values() if expires > now]

    async def _catch_up(self) -> None:
        try:
            last = await self._last_sequence()
        except _NATS_ERRORS:
            return  # NATS away: the view as it is
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_CATCH_UP):
                while self._seen < last:
                    self._advanced.clear()
                    await self._advanced.wait()

    async def _last_sequence(self) -> int:
        info = await self.nats.client.jetstream().stream_info(f"KV_{self.bucket}")
        return int(info.state.last_seq)

    async def _run(self) -> None:
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS away, the bucket not created yet: try again
                logger.debug("following bucket %s failed: %s", self.bucket, exc)
            await asyncio.sleep(self.retry)

    async def _follow(self) -> None:
        client = await self.nats.wait_connected()
        kv = await client.jetstream().key_value(self.bucket)
        ttl = (await kv.status()).ttl or _NO_TTL
        before = await self._last_sequence()  # the snapshot holds at least this much
        watcher = await kv.watchall(inactive_threshold=_WATCH_INACTIVE)
        try:
            snapshot: dict[str, tuple[bytes, float]] | None = {}
            async for entry in watcher:
                if entry is None:  # the initial values are all in
                    self._entries, snapshot = snapshot or {}, None
                    self._advance(before)
                    self._ready.set()
                    continue
                target = self._entries if snapshot is None else snapshot
                if entry.operation in (KV_DEL, KV_PURGE):
                    target.pop(entry.key, None)
                else:
                    # An update just in lives a full TTL; an older value what is left of it.
                    age = 0.0 if snapshot is None else _age(entry.created, ttl)
                    target[entry.key] = (entry.value or b"", time.monotonic() + ttl - age)
                if snapshot is None:
                    self._advance(entry.revision or 0)
        finally:
            with contextlib.suppress(*_NATS_ERRORS):
                await watcher.stop()  # type: ignore[no-untyped-call]  # nats.py leaves it untyped

    def _advance(self, sequence: int) -> None:
        if sequence > self._seen:
            self._seen = sequence
            self._advanced.set()


def _age(created: datetime | None, ttl: float) -> float:
    if created is None:
        return 0.0
    seconds = (datetime.now(UTC) - created).total_seconds()
    return min(max(seconds, 0.0), ttl)
