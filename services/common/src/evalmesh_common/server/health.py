"""grpc.health.v1 status driven by dependency probes.

A server starts with every service name, and the overall name ``""``, NOT_SERVING. A
:class:`ProbeLoop` runs the service's dependency probes every ``interval`` seconds and reports
SERVING only while all of them pass, so an orchestrator never routes to an instance whose
database or upstream is unreachable. On shutdown :meth:`ServerHealth.shut_down` sets every name
NOT_SERVING for good and ends open ``Watch`` streams, which would otherwise hold
``server.stop(grace)`` open for the whole grace period.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import grpc.aio
from grpc_health.v1 import health_pb2

# The stock aio servicer is re-exported as `health.aio` at runtime only.
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]

__all__ = ["HEALTH_SERVICE", "Probe", "ProbeLoop", "ServerHealth"]

logger = logging.getLogger(__name__)

Probe = Callable[[], Awaitable[bool]]
"""An async check of one dependency: True when it answers, False (or raising) when not."""

HEALTH_SERVICE: str = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class ServerHealth(health_aio.HealthServicer):  # type: ignore[misc]
    """The grpc.health.v1 servicer of one server: ``""`` and every service share one verdict.

    ``Check`` is the stock one. ``Watch`` is reimplemented so that streams end, after sending
    NOT_SERVING, once shutdown begins; the stock ``Watch`` never ends on its own.
    """

    def __init__(self, services: Sequence[str]) -> None:
        super().__init__()
        self.names: tuple[str, ...] = ("", *services)
        self.serving = False
        self.closing = False
        self._changed = asyncio.Event()

    async def initialize(self) -> None:
        """Register every name as NOT_SERVING (the stock servicer starts ``""`` SERVING)."""
        await self._set_all(_NOT_SERVING)

    async def set_serving(self, serving: bool) -> None:
        """Report every name SERVING or NOT_SERVING; ignored once shutdown has begun."""
        if serving == self.serving or self.closing:
            return
        self.serving = serving
        await self._set_all(_SERVING if serving else _NOT_SERVING)
        logger.info("health is now %s", "SERVING" if serving else "NOT_SERVING")

    async def shut_down(self) -> None:
        """Set every name NOT_SERVING for good and end every ``Watch`` stream."""
        self.serving = False
        self.closing = True
        await self.enter_graceful_shutdown()
        self._notify()

    def status_of(self, service: str) -> health_pb2.HealthCheckResponse.ServingStatus:
        """The status ``Watch`` reports for ``service``."""
        if service not in self.names:
            return health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        return _SERVING if self.serving else _NOT_SERVING

    async def Watch(  # noqa: N802 - the grpc method name
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        """Stream the status of ``request.service`` on every change, until shutdown."""
        last = None
        while True:
            changed = self._changed  # taken before reading, so no change slips in between
            status = self.status_of(request.service)
            if status != last:
                await context.write(health_pb2.HealthCheckResponse(status=status))
                last = status
            if self.closing:
                return
            await changed.wait()

    async def _set_all(self, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        for name in self.names:
            await self.set(name, status)
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()


class ProbeLoop:
    """Runs named dependency probes periodically and feeds the verdict to ServerHealth."""

    def __init__(
        self, health: ServerHealth, probes: Mapping[str, Probe], interval: float, timeout: float
    ) -> None:
        self.health = health
        self.probes = dict(probes)
        self.interval = interval
        self.timeout = timeout
        self._up: dict[str, bool] = {}

    async def run(self) -> None:
        """Probe forever (until cancelled), starting at once."""
        while True:
            await self.health.set_serving(await self.check())
            await asyncio.sleep(self.interval)

    async def check(self) -> bool:
        """Run every probe concurrently, each bounded by the timeout; True if all pass."""
        names = list(self.probes)
        results = await asyncio.gather(*(self._probe(name) for name in names))
        return all(results)

    async def _probe(self, name: str) -> bool:
        try:
            ok = bool(await asyncio.wait_for(self.probes[name](), self.timeout))
            why = "probe returned false"
        except TimeoutError:
            ok, why = False, f"probe timed out after {self.timeout:g}s"
        except Exception as exc:
            ok, why = False, f"probe raised {type(exc).__name__}: {exc}"
        self._record(name, ok, why)
        return ok

    def _record(self, name: str, ok: bool, why: str) -> None:
        # Log transitions only: a probe failing every second must not flood the logs.
        if self._up.get(name) == ok:
            return
        self._up[name] = ok
        if ok:
            logger.info("dependency %s is up", name, extra={"dependency": name})
        else:
            logger.warning("dependency %s is down: %s", name, why, extra={"dependency": name})
