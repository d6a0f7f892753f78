"""The life of an evaluation: its states, and which of them are terminal.

QUEUED -> RUNNING -> exactly one terminal state; QUEUED -> CANCELLED directly; a lost executor
returns RUNNING to QUEUED. Terminal states never change, so every service that waits for the end
(the gateway's watch streams, the scheduler's dead letters, storage's state machine and retention)
asks this one set. The numbers equal the wire enum ``evalmesh.v1.Evaluation.State``, so a proto
field's value can be tested directly (``record.evaluation.state in TERMINAL_STATES``) and stored
integers keep their meaning.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["TERMINAL_STATES", "State"]


class State(IntEnum):
    """Where an evaluation is in its life (``evalmesh.v1.Evaluation.State``)."""

    QUEUED = 1
    RUNNING = 2
    SUCCEEDED = 3
    FAILED = 4
    TIMED_OUT = 5
    MEMORY_LIMIT_EXCEEDED = 6
    OUTPUT_LIMIT_EXCEEDED = 7
    CANCELLED = 8
    ERROR = 9

    @property
    def terminal(self) -> bool:
        """True for the absorbing states."""
        return self >= State.SUCCEEDED


# Typed by number, so a wire enum value (a proto field) can be tested against it as it is.
TERMINAL_STATES: frozenset[int] = frozenset(s for s in State if s.terminal)
"""The states an evaluation ends in and never leaves."""
