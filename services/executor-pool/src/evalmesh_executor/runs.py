"""The evaluations this instance is running, and how each may be asked to stop.

A run is registered before its claim, so a cancel that arrives while the claim is in flight is
not lost: the sandbox then starts with its cancel already set and ends at once.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass, field
from datetime import datetime

__all__ = ["RunHandle", "RunRegistry", "Stop"]


class Stop(enum.IntEnum):
    """Why a run was stopped early; a higher value overrides a lower one."""

    GIVE_BACK = 1  # drain or shutdown: another executor runs it again
    CANCEL = 2  # a client asked: the evaluation ends CANCELLED with its partial output
    LOST = 3  # the lease is gone: another attempt owns it, write nothing


@dataclass
class RunHandle:
    """One evaluation held by this instance."""

    evaluation_id: str
    tenant: str = ""
    attempt: int = 0
    start_time: datetime | None = None
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    stopped: Stop | None = None
    reason: str = ""

    def stop(self, why: Stop, reason: str = "") -> None:
        """Kill the sandbox (if running) and remember the strongest reason."""
        if self.stopped is None or why > self.stopped:
            self.stopped = why
            self.reason = reason
        self.cancel.set()


class RunRegistry:
    """The runs of this instance by evaluation id, and a count of finished ones."""

    def __init__(self) -> None:
        self._runs: dict[str, RunHandle] = {}
        self.completed = 0

    def open(self, evaluation_id: str, tenant: str) -> RunHandle | None:
        """Register a run; None if this instance already holds the evaluation."""
        if evaluation_id in self._runs:
            return None
        handle = RunHandle(evaluation_id, tenant)
        self._runs[evaluation_id] = handle
        return handle

    def close(self, handle: RunHandle, *, completed: bool) -> None:
        """Forget a run; count it when it recorded a result."""
        if self._runs.get(handle.evaluation_id) is handle:
            del self._runs[handle.evaluation_id]
        if completed:
            self.completed += 1

    def stop(self, evaluation_id: str, why: Stop, reason: str = "") -> bool:
        """Stop the run of ``evaluation_id`` if this instance holds it; True if it did."""
        handle = self._runs.get(evaluation_id)
        if handle is None:
            return False
        handle.stop(why, reason)
        return True

    def stop_all(self, why: Stop, reason: str = "") -> int:
        """Stop every run; return how many."""
        for handle in self._runs.values():
            handle.stop(why, reason)
        return len(self._runs)

    def running(self) -> list[RunHandle]:
        """The runs held now, oldest first."""
        return list(self._runs.values())

    def __len__(self) -> int:
        return len(self._runs)
