"""The exit codes of ``evalmesh``: the program's own for ``run``, documented ones otherwise."""

from __future__ import annotations

from evalmesh.client import Evaluation, State

__all__ = ["EXIT_CODES_HELP", "exit_code_for"]

OK = 0
ERROR = 1  # the mesh answered with an error: unknown id, bad key, no permission, ...
USAGE = 2  # bad flags or arguments, or input the mesh rejected (field and bound are printed)
TIMED_OUT = 124  # like timeout(1)
OUTPUT_LIMIT = 125
PLATFORM_ERROR = 126  # evalmesh could not run the program (like a shell's "cannot execute")
SIGNAL_BASE = 128  # killed by signal n: 128 + n, as a shell reports it
CANCELLED = 130  # like Ctrl-C (128 + SIGINT)
MEMORY_LIMIT = 137  # like an OOM-killed container (128 + SIGKILL)
UNREACHABLE = 69  # no mesh found or reachable (EX_UNAVAILABLE); `evalmesh up` starts one

EXIT_CODES_HELP = """\b
Exit codes of `run`:
  0        SUCCEEDED
  n        FAILED: the program exited with status n
  128+n    FAILED: the program was killed by signal n
  124      TIMED_OUT (wall-clock limit)
  125      OUTPUT_LIMIT_EXCEEDED
  126      ERROR (the platform could not run the program)
  130      CANCELLED (also after Ctrl-C, which cancels the evaluation)
  137      MEMORY_LIMIT_EXCEEDED
Every command:
  1        the mesh refused the call (unknown id, bad key, no permission)
  2        usage error, or input out of bounds (the field and bound are printed)
  69       no mesh found or reachable: start one with `evalmesh up`"""

_BY_STATE = {
    State.SUCCEEDED: OK,
    State.TIMED_OUT: TIMED_OUT,
    State.MEMORY_LIMIT_EXCEEDED: MEMORY_LIMIT,
    State.OUTPUT_LIMIT_EXCEEDED: OUTPUT_LIMIT,
    State.CANCELLED: CANCELLED,
    State.ERROR: PLATFORM_ERROR,
}


def exit_code_for(evaluation: Evaluation) -> int:
    """The exit code ``evalmesh run`` ends with for a terminal ``evaluation``."""
    if evaluation.state in _BY_STATE:
        return _BY_STATE[evaluation.state]
    if evaluation.signal:
        return SIGNAL_BASE + evaluation.signal
    if evaluation.exit_code:
        return evaluation.exit_code % 256 or ERROR
    return ERROR  # FAILED without a status (or with 0) still failed
