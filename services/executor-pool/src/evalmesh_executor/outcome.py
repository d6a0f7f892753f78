"""How a sandbox run ended, as the terminal state and result the evaluation records.

Every outcome the user's program (or its limits) caused is final. Only a platform fault has no
verdict: the run is given back and another attempt runs it.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

from evalmesh.v1 import evaluation_pb2
from evalmesh_executor.sandbox import SandboxOutcome, SandboxResult

__all__ = ["Verdict", "verdict"]

State = evaluation_pb2.Evaluation.State
Cause = evaluation_pb2.TerminationCause
Fault = evaluation_pb2.Fault

_KILLED: dict[SandboxOutcome, tuple[State.ValueType, Cause.ValueType]] = {
    SandboxOutcome.TIMED_OUT: (
        State.STATE_TIMED_OUT,
        evaluation_pb2.TERMINATION_CAUSE_WALL_TIMEOUT,
    ),
    SandboxOutcome.MEMORY_LIMIT: (
        State.STATE_MEMORY_LIMIT_EXCEEDED,
        evaluation_pb2.TERMINATION_CAUSE_MEMORY_LIMIT,
    ),
    SandboxOutcome.OUTPUT_LIMIT: (
        State.STATE_OUTPUT_LIMIT_EXCEEDED,
        evaluation_pb2.TERMINATION_CAUSE_OUTPUT_LIMIT,
    ),
    SandboxOutcome.CANCELLED: (State.STATE_CANCELLED, evaluation_pb2.TERMINATION_CAUSE_CANCELLED),
}


@dataclass(frozen=True)
class Verdict:
    """The terminal state and the result to record."""

    state: State.ValueType
    result: evaluation_pb2.EvaluationResult


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _exited(result: SandboxResult) -> tuple[State.ValueType, Cause.ValueType, Fault.ValueType, str]:
    if result.signal is not None:
        detail = f"killed by {_signal_name(result.signal)} ({result.signal})"
        return (
            State.STATE_FAILED,
            evaluation_pb2.TERMINATION_CAUSE_SIGNALED,
            Fault.FAULT_USER,
            detail,
        )
    if result.exit_code == 0:
        return State.STATE_SUCCEEDED, evaluation_pb2.TERMINATION_CAUSE_EXITED, Fault.FAULT_NONE, ""
    detail = f"exited with status {result.exit_code}"
    return State.STATE_FAILED, evaluation_pb2.TERMINATION_CAUSE_EXITED, Fault.FAULT_USER, detail


def _killed_detail(result: SandboxResult) -> str:
    limits = result.applied_limits
    if result.outcome is SandboxOutcome.TIMED_OUT:
        return f"killed at the wall timeout of {limits.wall_timeout:g} s"
    if result.outcome is SandboxOutcome.MEMORY_LIMIT:
        return f"killed after exceeding {limits.memory_bytes} bytes of memory"
    if result.outcome is SandboxOutcome.OUTPUT_LIMIT:
        streams = [
            name
            for name, cut in (
                ("stdout", result.stdout_truncated),
                ("stderr", result.stderr_truncated),
            )
            if cut
        ]
        which = " and ".join(streams) or "output"
        return f"killed after writing more than {limits.max_output_bytes} bytes to {which}"
    return "cancelled"


def verdict(result: SandboxResult) -> Verdict | None:
    """The final state and result of ``result``; None for a platform fault (to be retried)."""
    if result.outcome is SandboxOutcome.PLATFORM_ERROR:
        return None
    if result.outcome is SandboxOutcome.EXITED:
        state, cause, fault, detail = _exited(result)
    else:
        state, cause = _KILLED[result.outcome]
        fault, detail = Fault.FAULT_USER, _killed_detail(result)
    record = evaluation_pb2.EvaluationResult(
        cause=cause,
        fault=fault,
        detail="; ".join(part for part in (detail, result.detail) if part),
        stdout_truncated=result.stdout_truncated,
        stderr_truncated=result.stderr_truncated,
        stdout_bytes=len(result.stdout),
        stderr_bytes=len(result.stderr),
        peak_memory_bytes=result.peak_memory_bytes,
    )
    if result.exit_code is not None:
        record.exit_code = result.exit_code
    if result.signal is not None:
        record.signal = result.signal
    record.wall_time.FromNanoseconds(round(result.wall_time_s * 1e9))
    record.cpu_time.FromNanoseconds(round(result.cpu_time_s * 1e9))
    return Verdict(state, record)
