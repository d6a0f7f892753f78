"""Fast unit tests: spec limits to sandbox limits and back, and sandbox results to verdicts."""

from __future__ import annotations

import signal

import pytest

from evalmesh.v1 import evaluation_pb2
from evalmesh_executor.config import LimitDefaults
from evalmesh_executor.limits import applied_limits, sandbox_limits
from evalmesh_executor.outcome import verdict
from evalmesh_executor.sandbox import SandboxLimits, SandboxOutcome, SandboxResult

State = evaluation_pb2.Evaluation.State
MiB = 1024 * 1024
DEFAULTS = LimitDefaults()


def _result(outcome: SandboxOutcome, **fields: object) -> SandboxResult:
    values: dict[str, object] = {
        "outcome": outcome,
        "exit_code": None,
        "signal": None,
        "stdout": b"out",
        "stderr": b"",
        "stdout_truncated": False,
        "stderr_truncated": False,
        "wall_time_s": 1.25,
        "cpu_time_s": 0.5,
        "peak_memory_bytes": 4096,
        "runtime": "python",
        "runtime_identity": "python 3.11.2 sha256:00",
        "applied_limits": SandboxLimits(wall_timeout=2, memory_bytes=64 * MiB),
        **fields,
    }
    return SandboxResult(**values)  # type: ignore[arg-type]


def test_unset_limits_take_the_operator_defaults() -> None:
    limits = sandbox_limits(evaluation_pb2.Limits(), DEFAULTS)
    assert limits.wall_timeout == 30
    assert limits.memory_bytes == 256 * MiB
    assert (limits.max_processes, limits.max_output_bytes, limits.cpu_quota) == (64, MiB, 1.0)
    assert limits.scratch_bytes == DEFAULTS.scratch_bytes
    assert limits.max_open_files == DEFAULTS.max_open_files


def test_set_limits_are_applied_and_reported_exactly() -> None:
    spec = evaluation_pb2.Limits(
        memory_bytes=32 * MiB, max_processes=8, max_output_bytes=1000, cpu_millicores=250
    )
    spec.wall_timeout.FromMilliseconds(1500)
    limits = sandbox_limits(spec, DEFAULTS)
    assert (limits.wall_timeout, limits.memory_bytes, limits.max_processes) == (1.5, 32 * MiB, 8)
    assert (limits.max_output_bytes, limits.cpu_quota) == (1000, 0.25)
    applied = applied_limits(limits)
    assert applied.wall_timeout.ToMilliseconds() == 1500
    assert (applied.memory_bytes, applied.max_processes) == (32 * MiB, 8)
    assert (applied.max_output_bytes, applied.cpu_millicores) == (1000, 250)
    assert applied.scratch_bytes == DEFAULTS.scratch_bytes


def test_exit_zero_succeeds_with_no_fault() -> None:
    found = verdict(_result(SandboxOutcome.EXITED, exit_code=0))
    assert found is not None
    assert found.state == State.STATE_SUCCEEDED
    assert found.result.cause == evaluation_pb2.TERMINATION_CAUSE_EXITED
    assert found.result.fault == evaluation_pb2.FAULT_NONE
    assert found.result.exit_code == 0
    assert found.result.wall_time.ToMilliseconds() == 1250
    assert found.result.cpu_time.ToMilliseconds() == 500
    assert (found.result.peak_memory_bytes, found.result.stdout_bytes) == (4096, 3)


def test_a_signal_the_program_caused_is_a_signaled_user_failure() -> None:
    found = verdict(_result(SandboxOutcome.EXITED, signal=int(signal.SIGABRT)))
    assert found is not None
    assert found.state == State.STATE_FAILED
    assert found.result.cause == evaluation_pb2.TERMINATION_CAUSE_SIGNALED
    assert found.result.signal == signal.SIGABRT
    assert not found.result.HasField("exit_code")
    assert "SIGABRT" in found.result.detail


@pytest.mark.parametrize(
    ("outcome", "state", "cause", "detail"),
    [
        (
            SandboxOutcome.TIMED_OUT,
            State.STATE_TIMED_OUT,
            evaluation_pb2.TERMINATION_CAUSE_WALL_TIMEOUT,
            "wall timeout of 2 s",
        ),
        (
            SandboxOutcome.MEMORY_LIMIT,
            State.STATE_MEMORY_LIMIT_EXCEEDED,
            evaluation_pb2.TERMINATION_CAUSE_MEMORY_LIMIT,
            f"{64 * MiB} bytes of memory",
        ),
        (
            SandboxOutcome.OUTPUT_LIMIT,
            State.STATE_OUTPUT_LIMIT_EXCEEDED,
            evaluation_pb2.TERMINATION_CAUSE_OUTPUT_LIMIT,
            "to stdout",
        ),
        (
            SandboxOutcome.CANCELLED,
            State.STATE_CANCELLED,
            evaluation_pb2.TERMINATION_CAUSE_CANCELLED,
            "cancelled",
        ),
    ],
)
def test_limit_kills_and_cancels_are_final_user_outcomes(
    outcome: SandboxOutcome,
    state: State.ValueType,
    cause: evaluation_pb2.TerminationCause.ValueType,
    detail: str,
) -> None:
    found = verdict(
        _result(outcome, signal=int(signal.SIGKILL), stdout_truncated=True, stderr_truncated=False)
    )
    assert found is not None
    assert (found.state, found.result.cause) == (state, cause)
    assert found.result.fault == evaluation_pb2.FAULT_USER
    assert detail in found.result.detail
    assert found.result.stdout_truncated


def test_a_platform_error_has_no_verdict_so_it_is_retried() -> None:
    assert verdict(_result(SandboxOutcome.PLATFORM_ERROR, detail="bwrap failed")) is None
