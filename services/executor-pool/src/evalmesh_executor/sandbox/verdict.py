"""Turning what was observed about a run into its outcome, exit code and signal."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from signal import SIGKILL

from .cgroups import CgroupStats
from .models import SandboxOutcome

__all__ = ["KILLED", "classify", "decode_status", "exit_status"]

_MAX_SIGNAL = 64

#: Outcomes in which the sandbox, not the program, ended the run (with SIGKILL).
KILLED = frozenset(
    {
        SandboxOutcome.TIMED_OUT,
        SandboxOutcome.MEMORY_LIMIT,
        SandboxOutcome.OUTPUT_LIMIT,
        SandboxOutcome.CANCELLED,
    }
)


def exit_status(status_lines: Iterable[bytes]) -> int | None:
    """The `exit-code` bwrap writes on --json-status-fd; absent if the program never ran."""
    for line in status_lines:
        with contextlib.suppress(ValueError, TypeError):
            status = json.loads(line)
            if isinstance(status, dict) and "exit-code" in status:
                return int(status["exit-code"])
    return None


def decode_status(raw: int | None, outcome: SandboxOutcome) -> tuple[int | None, int | None]:
    """(exit_code, signal) from bwrap's status.

    bwrap reports death by signal n as 128+n, so 129..192 reads as a signal (a program
    calling exit(137) itself is reported as SIGKILL; both are user failures).
    """
    if raw is None:
        return None, int(SIGKILL) if outcome in KILLED else None
    if 128 < raw <= 128 + _MAX_SIGNAL:
        return None, raw - 128
    return raw, None


def classify(
    stopped_by: SandboxOutcome,
    raw: int | None,
    stats: CgroupStats | None,
    truncated: bool,
) -> SandboxOutcome:
    """The outcome: what stopped the run first, refined for a run that ended by itself."""
    if stopped_by is not SandboxOutcome.EXITED:
        return stopped_by
    if truncated:
        return SandboxOutcome.OUTPUT_LIMIT  # passed the cap while the pipes drained
    if stats is not None and stats.oom_kills > 0:
        return SandboxOutcome.MEMORY_LIMIT
    if raw is None or stats is None:
        return SandboxOutcome.PLATFORM_ERROR  # setup failed, or teardown did
    return stopped_by
