"""Run a coroutine function every few seconds until cancelled, surviving its failures."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

__all__ = ["every"]

logger = logging.getLogger(__name__)


async def every(
    interval: float,
    name: str,
    step: Callable[[], Awaitable[object]],
    wake: asyncio.Event | None = None,
) -> None:
    """Call ``step`` now and then every ``interval`` seconds; log (not raise) its errors.

    A dependency that is down makes one pass fail; the next pass tries again, so the loop
    recovers by itself once the dependency is back. Setting ``wake`` starts the next pass at
    once (``step`` clears it when it begins).
    """
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The type too: some exceptions (a bare TimeoutError) have an empty message.
            logger.warning(
                "%s pass failed: %s: %s", name, type(exc).__name__, exc, extra={"loop": name}
            )
        if wake is None:
            await asyncio.sleep(interval)
            continue
        with contextlib.suppress(TimeoutError):  # not wait_for: it can swallow a cancel
            async with asyncio.timeout(interval):
                await wake.wait()
