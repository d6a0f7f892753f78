"""Submit through the real scheduler, run in a real executor (bwrap, then docker), read storage:
every user outcome is classified exactly, recorded once with its attempt, and acknowledged
(never retried)."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
from nats.js.errors import NotFoundError

from evalmesh.v1 import evaluation_pb2
from evalmesh_common.subjects import JOBS_STREAM, job_message_subject

from .harness import Driver

State = evaluation_pb2.Evaluation.State
MiB = 1024 * 1024
# Each test runs on a bwrap executor and on a docker one (conftest); on docker, requests with
# the default memory, processes and CPU take a warm container, the others start their own.
RUN_LOOP_BACKENDS = ("bwrap", "docker")


async def assert_acknowledged(driver: Driver, evaluation_id: str) -> None:
    """The job leaves the work queue: acknowledged, so it is never delivered again.

    The ack follows the terminal write (and the terminal event), so it may land a moment
    after storage already shows the result.
    """
    assert driver.nats is not None
    js = driver.nats.jetstream()
    subject = job_message_subject("normal", evaluation_id)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            await js.get_last_msg(JOBS_STREAM, subject)
        except NotFoundError:
            return
        await asyncio.sleep(0.05)
    pytest.fail("the job was never acknowledged")


async def test_print_one_succeeds_with_exact_stdout_and_the_applied_limits(driver: Driver) -> None:
    evaluation = await driver.run("print(1)", wall_timeout=5, memory_bytes=64 * MiB)
    assert evaluation.state == State.STATE_SUCCEEDED
    result = evaluation.result
    assert (result.stdout, result.stderr) == (b"1\n", b"")
    assert result.cause == evaluation_pb2.TERMINATION_CAUSE_EXITED
    assert result.fault == evaluation_pb2.FAULT_NONE
    assert result.HasField("exit_code")
    assert result.exit_code == 0
    assert not result.HasField("signal")
    assert result.cpu_time.ToNanoseconds() > 0
    assert result.peak_memory_bytes > 0
    assert evaluation.attempt == 1
    assert evaluation.runtime_digest.startswith("python 3.")
    applied = evaluation.applied_limits
    assert applied.wall_timeout.ToSeconds() == 5
    assert applied.memory_bytes == 64 * MiB
    assert (applied.max_processes, applied.cpu_millicores) == (64, 1000)
    assert applied.max_output_bytes == MiB
    assert applied.scratch_bytes > 0
    await assert_acknowledged(driver, evaluation.id)


async def test_stdout_and_stderr_stay_apart_and_byte_exact_even_when_not_utf8(
    driver: Driver,
) -> None:
    code = (
        "import sys\n"
        "sys.stdout.buffer.write(b'\\xff\\xfe\\x00\\xc3\\x28 out')\n"
        "sys.stderr.buffer.write(b'err \\x80\\x81')\n"
        "sys.stdout.buffer.write(bytes(range(256)))\n"
    )
    evaluation = await driver.run(code, stdin=b"")
    assert evaluation.state == State.STATE_SUCCEEDED
    assert evaluation.result.stdout == b"\xff\xfe\x00\xc3\x28 out" + bytes(range(256))
    assert evaluation.result.stderr == b"err \x80\x81"


async def test_stdin_reaches_the_program(driver: Driver) -> None:
    evaluation = await driver.run("import sys; print(sys.stdin.read()[::-1])", stdin=b"abc")
    assert evaluation.result.stdout == b"cba\n"


async def test_a_non_zero_exit_is_a_final_user_failure(driver: Driver) -> None:
    evaluation = await driver.run("import sys; print('bye'); sys.exit(3)")
    assert evaluation.state == State.STATE_FAILED
    result = evaluation.result
    assert (result.cause, result.fault) == (
        evaluation_pb2.TERMINATION_CAUSE_EXITED,
        evaluation_pb2.FAULT_USER,
    )
    assert result.exit_code == 3
    assert result.stdout == b"bye\n"
    assert evaluation.attempt == 1
    await assert_acknowledged(driver, evaluation.id)


async def test_a_crash_by_signal_fails_with_the_signal_recorded(driver: Driver) -> None:
    evaluation = await driver.run("import ctypes; ctypes.string_at(0)")
    assert evaluation.state == State.STATE_FAILED
    result = evaluation.result
    assert result.cause == evaluation_pb2.TERMINATION_CAUSE_SIGNALED
    assert result.fault == evaluation_pb2.FAULT_USER
    assert result.signal == signal.SIGSEGV
    assert not result.HasField("exit_code")
    assert "SIGSEGV" in result.detail
    assert evaluation.attempt == 1


async def test_the_wall_timeout_ends_timed_out_and_is_never_retried(driver: Driver) -> None:
    evaluation = await driver.run(
        "import time\nprint('before', flush=True)\ntime.sleep(60)", wall_timeout=1
    )
    assert evaluation.state == State.STATE_TIMED_OUT
    result = evaluation.result
    assert (result.cause, result.fault) == (
        evaluation_pb2.TERMINATION_CAUSE_WALL_TIMEOUT,
        evaluation_pb2.FAULT_USER,
    )
    assert 1.0 <= result.wall_time.ToNanoseconds() / 1e9 < 2.5
    assert result.stdout == b"before\n"
    assert evaluation.attempt == 1
    await assert_acknowledged(driver, evaluation.id)


async def test_exceeding_memory_ends_memory_limit_exceeded(driver: Driver) -> None:
    code = "chunks = []\nwhile True:\n    chunks.append(bytearray(8 * 1024 * 1024))"
    evaluation = await driver.run(code, memory_bytes=64 * MiB, wall_timeout=20)
    assert evaluation.state == State.STATE_MEMORY_LIMIT_EXCEEDED
    result = evaluation.result
    assert (result.cause, result.fault) == (
        evaluation_pb2.TERMINATION_CAUSE_MEMORY_LIMIT,
        evaluation_pb2.FAULT_USER,
    )
    assert str(64 * MiB) in result.detail
    assert evaluation.attempt == 1


async def test_the_output_cap_ends_output_limit_exceeded_with_exactly_the_cap_stored(
    driver: Driver,
) -> None:
    evaluation = await driver.run("while True:\n    print('x' * 99)", max_output_bytes=100_000)
    assert evaluation.state == State.STATE_OUTPUT_LIMIT_EXCEEDED
    result = evaluation.result
    assert (result.cause, result.fault) == (
        evaluation_pb2.TERMINATION_CAUSE_OUTPUT_LIMIT,
        evaluation_pb2.FAULT_USER,
    )
    assert result.stdout_truncated
    assert not result.stderr_truncated
    assert result.stdout == (b"x" * 99 + b"\n") * 1000
    assert result.stdout_bytes == 100_000


async def test_large_output_is_stored_whole_through_batches(driver: Driver) -> None:
    code = "import sys\nfor i in range(3000):\n    sys.stdout.write(f'{i:07d}' + 'y' * 993)\n"
    evaluation = await driver.run(code, max_output_bytes=4 * MiB)
    assert evaluation.state == State.STATE_SUCCEEDED
    expected = b"".join(f"{i:07d}".encode() + b"y" * 993 for i in range(3000))
    assert evaluation.result.stdout == expected
