"""Named shutdown hooks grouped into phases, each run with a deadline.

A failing or hanging hook is logged and skipped: one stuck NATS drain must not keep the
database engine from being disposed, nor the process from exiting.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable

__all__ = ["Hook", "Phase", "ShutdownHooks"]

logger = logging.getLogger(__name__)

Hook = Callable[[], Awaitable[None]]
"""An async callable run once during shutdown."""


class Phase(enum.Enum):
    """Hook phases, in the order :class:`~evalmesh_common.server.ServiceApp` runs them."""

    STOP_WORK = "stop_work"  # before server.stop: stop pulling jobs, close live streams
    DRAIN = "drain"  # after server.stop: flush and close outbound connections (NATS drain)
    DISPOSE = "dispose"  # last: release pools and engines (database engine)


class ShutdownHooks:
    """Hooks per phase, run in registration order, each bounded by ``timeout`` seconds."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._hooks: dict[Phase, list[tuple[str, Hook]]] = {phase: [] for phase in Phase}

    def add(self, phase: Phase, name: str, hook: Hook) -> None:
        """Register ``hook`` under ``name`` (used in logs) to run in ``phase``."""
        self._hooks[phase].append((name, hook))

    async def run(self, phase: Phase) -> None:
        """Run the hooks of ``phase`` one after another; never raises."""
        for name, hook in self._hooks[phase]:
            await self._run_one(phase, name, hook)

    async def _run_one(self, phase: Phase, name: str, hook: Hook) -> None:
        extra = {"hook": name, "phase": phase.value}
        try:
            await asyncio.wait_for(hook(), self.timeout)
        except TimeoutError:
            logger.error("shutdown hook %s timed out after %gs", name, self.timeout, extra=extra)
        except Exception:
            logger.exception("shutdown hook %s failed", name, extra=extra)
        else:
            logger.debug("shutdown hook %s done", name, extra=extra)
