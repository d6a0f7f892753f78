"""Live events, cancel, and the control API of a real executor in a real mesh (bwrap, then
docker)."""

from __future__ import annotations

import asyncio
import time
import uuid

from evalmesh.executor.v1 import executor_service_pb2, pool_pb2
from evalmesh.storage.v1 import storage_service_pb2
from evalmesh.v1 import evaluation_pb2
from evalmesh_common.subjects import EXECUTORS_BUCKET

from .harness import TENANT, TERMINAL, Driver, EventLog, Service, job_processes, marked_program

RUN_LOOP_BACKENDS = ("bwrap", "docker")
State = evaluation_pb2.Evaluation.State
STDOUT = evaluation_pb2.OUTPUT_STREAM_STDOUT
STDERR = evaluation_pb2.OUTPUT_STREAM_STDERR


async def _stored(
    driver: Driver, evaluation_id: str, stream: evaluation_pb2.OutputStream.ValueType
) -> bytes:
    data = b""
    while True:
        request = storage_service_pb2.ReadOutputRequest(
            tenant=TENANT,
            id=evaluation_id,
            stream=stream,
            offset=len(data),
        )
        reply = await driver.storage.ReadOutput(request, timeout=10)
        piece = b"".join(chunk.data for chunk in reply.chunks)
        if not piece:
            return data
        data += piece


def _assert_contiguous(chunks: list[evaluation_pb2.OutputChunk]) -> bytes:
    assert [c.sequence for c in chunks] == list(range(len(chunks)))
    offset = 0
    for chunk in chunks:
        assert chunk.offset == offset
        offset += len(chunk.data)
    return b"".join(c.data for c in chunks)


async def test_live_events_arrive_in_order_and_all_output_is_stored_before_the_terminal_state(
    driver: Driver,
) -> None:
    log = await driver.events()
    snapshots: dict[evaluation_pb2.OutputStream.ValueType, bytes] = {}
    code = (
        "import sys, time\n"
        "for i in range(40):\n"
        "    print(f'line {i}', flush=True)\n"
        "    if i % 10 == 0:\n"
        "        sys.stderr.write(f'warn {i}\\n'); sys.stderr.flush()\n"
        "    time.sleep(0.005)\n"
        "sys.stdout.write('z' * 600000)\n"
    )
    evaluation_id = await driver.submit(code, max_output_bytes=1024 * 1024)

    async def snapshot_at_terminal() -> None:
        # Read storage the moment the terminal event arrives: everything must be there.
        await log.wait_for(lambda: any(s in TERMINAL for s in log.states(evaluation_id)), 30)
        for stream in (STDOUT, STDERR):
            snapshots[stream] = await _stored(driver, evaluation_id, stream)

    await snapshot_at_terminal()
    evaluation = await driver.wait_terminal(evaluation_id)
    expected_out = b"".join(f"line {i}\n".encode() for i in range(40)) + b"z" * 600000
    expected_err = b"".join(f"warn {i}\n".encode() for i in range(0, 40, 10))
    assert evaluation.result.stdout == expected_out
    assert evaluation.result.stderr == expected_err
    assert snapshots == {STDOUT: expected_out, STDERR: expected_err}
    assert _assert_contiguous(log.output(evaluation_id, STDOUT)) == expected_out
    assert _assert_contiguous(log.output(evaluation_id, STDERR)) == expected_err
    assert log.states(evaluation_id) == [State.STATE_RUNNING, State.STATE_SUCCEEDED]
    events = log.of(evaluation_id)
    assert events[0].WhichOneof("event") == "state"  # RUNNING comes before any output
    assert {e.attempt for e in events} == {1}


async def _running_with_output(driver: Driver, log: EventLog, code: str) -> str:
    """Submit ``code`` (which prints "started") and wait until that line arrived live."""
    evaluation_id = await driver.submit(code, wall_timeout=60)

    def started() -> bool:
        return b"".join(c.data for c in log.output(evaluation_id, STDOUT)) == b"started\n"

    await log.wait_for(started, 20)
    return evaluation_id


async def test_cancel_ends_a_running_evaluation_within_a_second_keeping_partial_output(
    driver: Driver,
) -> None:
    log = await driver.events()
    marker = f"evalmesh-cancel-{uuid.uuid4().hex}"
    then = "import time\nprint('started', flush=True)\nwhile True:\n    time.sleep(0.05)"
    code = marked_program(marker, "pass", then)
    evaluation_id = await _running_with_output(driver, log, code)
    assert len(job_processes(marker.encode())) == 1
    requested = time.monotonic()
    await driver.cancel(evaluation_id)
    answered = time.monotonic()
    while job_processes(marker.encode()):
        # Bounds far below the run's 30 s wall timeout, far above a loaded host's latency.
        assert time.monotonic() - requested < 5.0, "the sandbox outlived the cancel by 5 s"
        await asyncio.sleep(0.01)
    await log.wait_for(lambda: State.STATE_CANCELLED in log.states(evaluation_id), 5)
    took = time.monotonic() - answered
    assert took < 5.0, f"CANCELLED {took:.2f}s after the cancel was accepted"
    evaluation = await driver.wait_terminal(evaluation_id)
    assert evaluation.state == State.STATE_CANCELLED
    assert evaluation.result.cause == evaluation_pb2.TERMINATION_CAUSE_CANCELLED
    assert evaluation.result.fault == evaluation_pb2.FAULT_USER
    assert evaluation.result.stdout == b"started\n"


async def test_cancel_run_stops_the_run_held_by_that_executor(
    driver: Driver, executor: Service
) -> None:
    stub = driver.executor_stub(executor)
    log = await driver.events()
    code = "import time\nprint('started', flush=True)\ntime.sleep(60)"
    evaluation_id = await _running_with_output(driver, log, code)
    unknown = executor_service_pb2.CancelRunRequest(evaluation_id="ev_not_here")
    assert not (await stub.CancelRun(unknown, timeout=5)).found
    request = executor_service_pb2.CancelRunRequest(evaluation_id=evaluation_id)
    assert (await stub.CancelRun(request, timeout=5)).found
    evaluation = await driver.wait_terminal(evaluation_id, within=5)
    assert evaluation.state == State.STATE_CANCELLED
    assert evaluation.result.stdout == b"started\n"


async def test_pool_status_names_runs_and_runtimes_and_is_heartbeated_to_the_bucket(
    driver: Driver, executor: Service, mesh_backend: str
) -> None:
    stub = driver.executor_stub(executor)
    log = await driver.events()
    code = "import time\nprint('started', flush=True)\ntime.sleep(1)"
    evaluation_id = await _running_with_output(driver, log, code)
    status = (await stub.GetPoolStatus(executor_service_pb2.GetPoolStatusRequest())).status
    assert status.backend == mesh_backend
    assert status.slots == 2
    assert status.healthy
    assert not status.unhealthy_reason
    assert not status.draining
    assert [(r.evaluation_id, r.attempt, r.tenant) for r in status.runs] == [
        (evaluation_id, 1, TENANT)
    ]
    assert status.runs[0].start_time.seconds > 0
    runtimes = (await stub.ListRuntimes(executor_service_pb2.ListRuntimesRequest())).runtimes
    assert [r.name for r in runtimes] == ["python"]
    assert runtimes[0].digest.startswith("sha256:")
    assert runtimes[0].version.startswith("3.")
    assert list(status.runtimes) == list(runtimes)
    await driver.wait_terminal(evaluation_id)
    assert driver.nats is not None
    bucket = await driver.nats.jetstream().key_value(EXECUTORS_BUCKET)

    async def latest_beat() -> pool_pb2.PoolStatus:
        entry = await bucket.get(status.instance_id)
        assert entry.value is not None
        return pool_pb2.PoolStatus.FromString(entry.value)

    def after_the_run(beat: pool_pb2.PoolStatus) -> bool:
        newer = beat.report_time.ToNanoseconds() > status.report_time.ToNanoseconds()
        return newer and not beat.runs

    # Beats come every 0.5 s (EXECUTOR_ENV), but a loaded host may send the next one late:
    # wait for the first beat sent after the run ended rather than a fixed time.
    deadline = time.monotonic() + 10
    beat = await latest_beat()
    while not after_the_run(beat) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        beat = await latest_beat()
    assert beat.instance_id == status.instance_id
    assert beat.healthy
    assert beat.completed >= 1
    assert not beat.runs
    assert beat.report_time.ToNanoseconds() > status.report_time.ToNanoseconds()
