"""Work a run hands off once its result is known, which a closing backend waits for.

Removing a finished bwrap sandbox's cgroups and scratch, or a finished container, need not hold
up the run's result: each is started here right after it, and ``wait`` lets ``close()`` (and
the docker backend's ``settle()``) see them through. It runs on the event loop, not in a thread
of its own (a thread hop per step cost more CPU than it saved).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

__all__ = ["Background"]

log = logging.getLogger(__name__)


class Background:
    """Tasks started and forgotten by runs; ``what`` names them in the log if one fails."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the background."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    async def wait(self) -> None:
        """Until every task started so far, and any they started, has ended.

        Waiting is not owning: a caller cancelled meanwhile leaves the tasks running.
        """
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed: %s", self._what, task.exception())
