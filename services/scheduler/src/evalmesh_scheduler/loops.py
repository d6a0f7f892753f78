"""Run a coroutine function every few seconds until cancelled, surviving its failures."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

__all__ = ["every"]

logger = logging.getLogger(__name__)


async def every(interval: float, name: str, step: Callable[[], Awaitable[object]]) -> None:
    """Call ``step`` now and then every ``interval`` seconds; log (not raise) its errors.

    A dependency that is down makes one pass fail; the next pass tries again, so the loop
    recovers by itself once the dependency is back.
    """
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning("%s pass failed: %s", name, exc, extra={"loop": name})
        await asyncio.sleep(interval)
