"""The evaluations this instance is running, and how each may be asked to stop.

A run is registered before its claim, so a cancel that arrives while the claim is in flight is
not lost: the sandbox then starts with its cancel already set and ends at once. When a run is
closed, how it ended is counted by :func:`outcome` (the executor's finished-runs metric).
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass, field
from datetime import datetime

__all__ = ["OUTCOMES", "RunHandle", "RunRegistry", "Stop", "outcome"]

OUTCOMES = ("completed", "unclaimed", "given_back", "lost", "fault")
"""How a run can end: its result recorded; ended before any claim (no longer queued, claim
refused, tenant at its share, storage unreachable); given back on drain or shutdown; its lease
lost to another attempt; or claimed and ended by a platform fault with no result."""


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


def outcome(handle: RunHandle, *, completed: bool) -> str:
    """Which of :data:`OUTCOMES` describes a run that is being closed."""
    if completed:
        return "completed"
    if not handle.attempt:
        return "unclaimed"
    if handle.stopped is Stop.LOST:
        return "lost"
    if handle.stopped is Stop.GIVE_BACK:
        return "given_back"
    return "fault"


class RunRegistry:
    """The runs of this instance by evaluation id, and counts of finished ones by outcome."""

    def __init__(self) -> None:
        self._runs: dict[str, RunHandle] = {}
        self.finished = dict.fromkeys(OUTCOMES, 0)

    @property
    def completed(self) -> int:
        """How many runs recorded a result."""
        return self.finished["completed"]

    def open(self, evaluation_id: str, tenant: str) -> RunHandle | None:
        """Register a run; None if this instance already holds the evaluation."""
        if evaluation_id in self._runs:
            return None
        handle = RunHandle(evaluation_id, tenant)
        self._runs[evaluation_id] = handle
        return handle

    def close(self, handle: RunHandle, *, completed: bool) -> None:
        """Forget a run and count its outcome (``completed``: it recorded a result)."""
        if self._runs.get(handle.evaluation_id) is handle:
            del self._runs[handle.evaluation_id]
        self.finished[outcome(handle, completed=completed)] += 1

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
