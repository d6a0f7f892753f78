"""Prometheus metrics: a registry per service, the ``/metrics`` listener, and a loop bridge.

Every :class:`~evalmesh_common.server.ServiceApp` owns a :func:`service_registry` (never
prometheus_client's global one, so several apps in one test process do not collide); a service
registers its collectors on ``app.metrics``. With ``EVALMESH_METRICS_PORT`` set, the app serves
that registry in the text exposition format over plain HTTP (:class:`MetricsListener`).

Scrapes are answered on the listener's own threads, so a scrape never waits for the event loop,
and a blocked loop still shows in the process metrics. A collector whose numbers need an async
call (the scheduler's queue statistics) goes through :class:`LoopSnapshot`, which runs the call
on the service's loop at most every ``max_age`` seconds however often it is scraped.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["LoopSnapshot", "MetricsListener", "scrape", "service_registry"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


def service_registry() -> CollectorRegistry:
    """A new registry holding the process, Python platform and garbage-collector metrics."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class MetricsListener:
    """Serves one registry over HTTP (any path; ``/metrics`` by convention) from a daemon thread."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int | None:
        """The bound port while listening, else None."""
        return None if self._server is None else int(self._server.server_port)

    def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (port 0 picks a free port) and return the bound port."""
        if self._server is not None:
            raise RuntimeError("the metrics listener is already running")
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        return int(self._server.server_port)

    async def stop(self) -> None:
        """Close the listener and wait for its thread; idempotent."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        # shutdown() waits for serve_forever's next poll (up to half a second): not on the loop.
        await asyncio.to_thread(server.shutdown)
        server.server_close()
        if thread is not None:
            await asyncio.to_thread(thread.join)


class LoopSnapshot(Generic[T]):
    """The result of an async ``fetch``, for readers on other threads, at most ``max_age`` old.

    Create it inside the event loop that ``fetch`` belongs to. :meth:`get` runs ``fetch`` on that
    loop when the cached value is older than ``max_age`` (concurrent readers share one call) and
    returns None when it fails or takes longer than ``timeout``: a scrape then simply lacks these
    metrics. The first failure of a run of them is logged as a warning, the rest at debug level.
    """

    def __init__(
        self, fetch: Callable[[], Awaitable[T]], *, max_age: float = 2.0, timeout: float = 5.0
    ) -> None:
        self._fetch = fetch
        self.max_age = max_age
        self.timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._lock = asyncio.Lock()
        self._value: T | None = None
        self._fetched = -math.inf
        self._failing = False

    def get(self) -> T | None:
        """The latest value, fetched now if stale; call from any thread but the loop's own."""
        if self._fresh():
            return self._value
        if _running_loop() is self._loop:  # waiting here would deadlock the loop
            return None
        future = asyncio.run_coroutine_threadsafe(self._refresh(), self._loop)
        try:
            value = future.result(self.timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            self._failed(f"it took longer than {self.timeout:g}s")
        except Exception as exc:
            self._failed(str(exc) or type(exc).__name__)
        else:
            self._failing = False
            return value
        return None

    def _failed(self, why: str) -> None:
        level = logging.DEBUG if self._failing else logging.WARNING
        logger.log(level, "metrics snapshot omitted: %s", why)
        self._failing = True

    def _fresh(self) -> bool:
        return time.monotonic() - self._fetched < self.max_age

    async def _refresh(self) -> T | None:
        async with self._lock:
            if not self._fresh():
                self._value = await self._fetch()
                self._fetched = time.monotonic()
            return self._value


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def scrape(address: str, timeout: float = 5.0) -> dict[str, float]:
    """GET ``http://address/metrics`` and return each sample as ``name{label="value",...}``
    (labels sorted, no braces without labels) -> value. For tests and scripts."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=timeout) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples
