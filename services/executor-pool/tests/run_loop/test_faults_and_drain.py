"""Faults (HOSTILE.md F04, F05, F21, F23), priority order, drain and SIGTERM, each on a mesh of
its own: real NATS, storage, scheduler (its reaper and dead-letter handler), bwrap executors."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest
from nats.js.errors import NotFoundError

from evalmesh.executor.v1 import executor_service_pb2, executor_service_pb2_grpc
from evalmesh.v1 import evaluation_pb2
from evalmesh_common.priority import start_order
from evalmesh_common.subjects import (
    EXECUTORS_BUCKET,
    JOBS_STREAM,
    job_consumer,
    job_message_subject,
    max_deliveries_advisory_subject,
)

from .conftest import MakeMesh
from .harness import Driver, job_processes, two_process_job

pytestmark = pytest.mark.slow

State = evaluation_pb2.Evaluation.State
STDOUT = evaluation_pb2.OUTPUT_STREAM_STDOUT


async def _eventually(
    check: Callable[[], bool | Awaitable[bool]], within: float, what: str
) -> None:
    """Poll ``check`` (sync or async) until it holds; TimeoutError(what) after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        outcome = check()
        if not isinstance(outcome, bool):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.02)


async def test_a_job_longer_than_ack_wait_runs_exactly_once(make_mesh: MakeMesh) -> None:
    mesh = make_mesh({"EVALMESH_QUEUE_ACK_WAIT": "1"})
    mesh.executor()
    mesh.executor()  # a second instance that would take a redelivery
    async with Driver(mesh) as driver:
        assert driver.nats is not None
        js = driver.nats.jetstream()
        evaluation_id = await driver.submit("import time\ntime.sleep(3.5)\nprint('once')")
        redelivered = 0
        while (evaluation := await driver.get(evaluation_id)).state not in (
            State.STATE_SUCCEEDED,
            State.STATE_FAILED,
        ):
            info = await js.consumer_info(JOBS_STREAM, job_consumer("normal"))
            redelivered = max(redelivered, info.num_redelivered or 0)
            await asyncio.sleep(0.1)
        info = await js.consumer_info(JOBS_STREAM, job_consumer("normal"))
        assert info.delivered.consumer_seq == 1, "the job was delivered more than once"
    assert redelivered == 0
    assert evaluation.state == State.STATE_SUCCEEDED
    assert evaluation.attempt == 1
    assert evaluation.result.stdout == b"once\n"


async def test_kill_9_mid_run_kills_the_sandbox_and_the_evaluation_runs_again_once(
    make_mesh: MakeMesh,
) -> None:
    mesh = make_mesh({"EVALMESH_QUEUE_ACK_WAIT": "2"})
    lease = {"EVALMESH_EXECUTOR_LEASE": "2"}
    first = mesh.executor(lease)
    async with Driver(mesh) as driver:
        log = await driver.events()
        marker = f"evalmesh-f04-{uuid.uuid4().hex}"
        evaluation_id = await driver.submit(two_process_job(marker), wall_timeout=30)
        await log.wait_for(lambda: bool(log.output(evaluation_id, STDOUT)), 20)
        assert len(job_processes(marker.encode())) == 2
        first.kill()
        await _eventually(
            lambda: not job_processes(marker.encode()), 1.0, "the sandbox outlived its executor"
        )
        second = mesh.executor(lease)
        evaluation = await driver.wait_terminal(evaluation_id, within=40)
        # The terminal event is published once storage has the result: it may arrive after.
        await log.wait_for(lambda: State.STATE_SUCCEEDED in log.states(evaluation_id), 10)
    assert evaluation.state == State.STATE_SUCCEEDED
    assert evaluation.attempt == 2
    assert evaluation.result.stdout == b"started\ndone\n"  # attempt 2's output only
    assert evaluation.executor_id != ""
    assert second.pid != first.pid
    assert [e.attempt for e in log.of(evaluation_id) if e.state == State.STATE_SUCCEEDED] == [2]


async def test_kill_9_after_the_result_is_stored_before_the_ack_is_not_run_again(
    make_mesh: MakeMesh,
) -> None:
    mesh = make_mesh({"EVALMESH_QUEUE_ACK_WAIT": "1"})
    crashing = mesh.executor({"EVALMESH_TEST_CRASH_BEFORE_ACK": "1"})
    async with Driver(mesh) as driver:
        assert driver.nats is not None
        js = driver.nats.jetstream()
        evaluation_id = await driver.submit("print('once')")
        stored = await driver.wait_terminal(evaluation_id)
        await _eventually(
            lambda: crashing.process.poll() is not None, 10, "no crash before the ack"
        )
        assert crashing.process.poll() == -signal.SIGKILL
        subject = job_message_subject("normal", evaluation_id)
        await js.get_last_msg(JOBS_STREAM, subject)  # still queued: never acknowledged
        mesh.executor()

        async def job_gone() -> bool:
            try:
                await js.get_last_msg(JOBS_STREAM, subject)
            except NotFoundError:
                return True
            return False

        await _eventually(job_gone, 15, "the redelivered job was never dropped")
        again = await driver.get(evaluation_id)
    assert stored.state == State.STATE_SUCCEEDED
    assert stored.attempt == 1
    assert again.attempt == 1
    assert again.end_time == stored.end_time
    assert again.result.stdout == b"once\n"


async def test_storage_killed_mid_run_the_executor_retries_its_fenced_writes(
    make_mesh: MakeMesh,
) -> None:
    mesh = make_mesh({})
    mesh.executor()
    async with Driver(mesh) as driver:
        log = await driver.events()
        code = "import time\nprint('a', flush=True)\ntime.sleep(1.5)\nprint('b')"
        evaluation_id = await driver.submit(code)
        await log.wait_for(lambda: bool(log.output(evaluation_id, STDOUT)), 20)
        await asyncio.to_thread(mesh.restart_storage, 2.0)  # down across the completion
        evaluation = await driver.wait_terminal(evaluation_id, within=30)
        # The terminal event is published once storage has the result: it may arrive after.
        await log.wait_for(lambda: State.STATE_SUCCEEDED in log.states(evaluation_id), 10)
    assert evaluation.state == State.STATE_SUCCEEDED
    assert evaluation.attempt == 1
    assert evaluation.result.stdout == b"a\nb\n"
    assert [s for s in log.states(evaluation_id) if s != State.STATE_RUNNING] == [
        State.STATE_SUCCEEDED
    ]


async def test_a_job_delivered_while_storage_is_down_waits_for_it_instead_of_spending_deliveries(
    make_mesh: MakeMesh,
) -> None:
    # Two deliveries, and a claim gives up on storage after a second: naking each failed claim
    # would dead-letter the job within the outage.
    mesh = make_mesh({"EVALMESH_QUEUE_MAX_DELIVER": "2"})
    executor = mesh.executor({"EVALMESH_EXECUTOR_SLOTS": "1", "EVALMESH_STORAGE_RETRY_BUDGET": "1"})
    async with Driver(mesh) as driver:
        log = await driver.events()
        first = await driver.submit("import time\ntime.sleep(2)")
        await log.wait_for(lambda: State.STATE_RUNNING in log.states(first), 20)
        second = await driver.submit("print('after the outage')")
        # The slot frees while storage is away, so the second job's claim meets the outage.
        await asyncio.to_thread(mesh.restart_storage, 5.0)
        evaluation = await driver.wait_terminal(second, within=40)
    assert evaluation.state == State.STATE_SUCCEEDED
    assert evaluation.attempt == 1
    assert evaluation.result.stdout == b"after the outage\n"
    lines = executor.process.log_path.read_text().splitlines()
    started = [json.loads(x) for x in lines if second in x and '"running"' in x]
    assert [line["deliveries"] for line in started] == [1]  # the outage spent no delivery


async def test_an_undecodable_job_is_never_run_and_stops_at_max_deliveries(
    make_mesh: MakeMesh,
) -> None:
    mesh = make_mesh({"EVALMESH_QUEUE_MAX_DELIVER": "3"})
    executor = mesh.executor()
    async with Driver(mesh) as driver:
        assert driver.nats is not None
        advisories: list[dict[str, object]] = []

        async def on_advisory(msg: object) -> None:
            advisories.append(json.loads(msg.data))  # type: ignore[attr-defined]

        await driver.nats.subscribe(max_deliveries_advisory_subject(), cb=on_advisory)
        js = driver.nats.jetstream()
        poison = job_message_subject("normal", "ev_poison")
        await js.publish(poison, b"\xff\xff\xff not a Job", headers={"Nats-Msg-Id": "ev_poison"})

        async def given_up() -> bool:
            return bool(advisories)

        await _eventually(given_up, 20, "no max-deliveries advisory")
        assert advisories[0]["deliveries"] == 3
        assert executor.process.poll() is None, "the poison job crashed the executor"
        evaluation = await driver.run("print('still fine')")
    assert evaluation.state == State.STATE_SUCCEEDED


async def test_a_job_no_executor_can_run_ends_error_after_max_deliveries(
    make_mesh: MakeMesh,
) -> None:
    # Submitted while no executor is up, so the scheduler cannot refuse it (with a healthy pool
    # it would: RUNTIME_UNAVAILABLE); the executor that comes lacks the runtime.
    mesh = make_mesh({"EVALMESH_QUEUE_MAX_DELIVER": "3"})
    async with Driver(mesh) as driver:
        evaluation_id = await driver.submit("print(1)", runtime="python-ml")
        mesh.executor({"EVALMESH_PASS_ON_DELAY": "0.2", "EVALMESH_BWRAP_RUNTIME_TREES": ""})
        evaluation = await driver.wait_terminal(evaluation_id, within=30)
    assert evaluation.state == State.STATE_ERROR
    assert evaluation.result.cause == evaluation_pb2.TERMINATION_CAUSE_MAX_ATTEMPTS
    assert evaluation.result.fault == evaluation_pb2.FAULT_PLATFORM
    assert "3 times" in evaluation.result.detail


async def test_one_slot_starts_a_backlog_in_the_weighted_priority_order(
    make_mesh: MakeMesh,
) -> None:
    mesh = make_mesh({})
    depths = {"high": 12, "normal": 6, "low": 3}
    priorities = {
        "high": evaluation_pb2.PRIORITY_HIGH,
        "normal": evaluation_pb2.PRIORITY_NORMAL,
        "low": evaluation_pb2.PRIORITY_LOW,
    }
    async with Driver(mesh) as driver:
        ids: dict[str, str] = {}
        for name, depth in depths.items():  # the whole backlog waits before any executor
            for _ in range(depth):
                ids[await driver.submit("pass", priority=priorities[name])] = name
        mesh.executor({"EVALMESH_EXECUTOR_SLOTS": "1"})
        finished = [await driver.wait_terminal(i, within=60) for i in ids]
    started = sorted(finished, key=lambda e: e.start_time.ToNanoseconds())
    order = [ids[e.id] for e in started]
    assert order == start_order(depths)
    assert Counter(order[:10]) == Counter({"high": 6, "normal": 3, "low": 1})
    assert order.index("low") < 10, "LOW must progress while HIGH work waits"


async def test_sigterm_during_a_run_lets_it_finish_within_the_grace_and_exits_zero(
    make_mesh: MakeMesh,
) -> None:
    mesh = make_mesh({})
    executor = mesh.executor({"EVALMESH_DRAIN_GRACE": "6"})
    async with Driver(mesh) as driver:
        log = await driver.events()
        code = "import time\nprint('started', flush=True)\ntime.sleep(1.5)\nprint('finished')"
        evaluation_id = await driver.submit(code)
        await log.wait_for(lambda: bool(log.output(evaluation_id, STDOUT)), 20)
        stub = driver.executor_stub(executor)
        status = (await stub.GetPoolStatus(executor_service_pb2.GetPoolStatusRequest())).status
        signalled = time.monotonic()
        status_code = await asyncio.to_thread(executor.terminate, 20)
        took = time.monotonic() - signalled
        evaluation = await driver.get(evaluation_id)
        assert driver.nats is not None
        bucket = await driver.nats.jetstream().key_value(EXECUTORS_BUCKET)
        with pytest.raises(Exception, match=r"not found|deleted"):
            await bucket.get(status.instance_id)
    assert status_code == 0
    assert took < 6
    assert evaluation.state == State.STATE_SUCCEEDED
    assert evaluation.attempt == 1
    assert evaluation.result.stdout == b"started\nfinished\n"


LONGER_THAN_GRACE = "import time\nprint('started', flush=True)\ntime.sleep(1.5)\nprint('done')"


async def _started(driver: Driver, code: str) -> str:
    """Submit ``code`` and return its evaluation id once its first output is seen."""
    log = await driver.events()
    evaluation_id = await driver.submit(code)
    await log.wait_for(lambda: bool(log.output(evaluation_id, STDOUT)), 20)
    return evaluation_id


async def _drain(
    stub: executor_service_pb2_grpc.ExecutorServiceAsyncStub, grace_ms: int
) -> executor_service_pb2.DrainResponse:
    request = executor_service_pb2.DrainRequest()
    request.grace.FromMilliseconds(grace_ms)
    reply: executor_service_pb2.DrainResponse = await stub.Drain(request, timeout=10)
    return reply


async def test_drain_gives_back_runs_that_outlast_the_grace_and_they_run_elsewhere(
    make_mesh: MakeMesh,
) -> None:
    mesh = make_mesh({})
    first = mesh.executor()
    async with Driver(mesh) as driver:
        evaluation_id = await _started(driver, LONGER_THAN_GRACE)
        stub = driver.executor_stub(first)
        reply = await _drain(stub, grace_ms=200)
        assert (reply.finished, reply.returned) == (0, 1)
        status = (await stub.GetPoolStatus(executor_service_pb2.GetPoolStatusRequest())).status
        assert status.draining
        assert not status.healthy
        assert not status.runs
        queued = await driver.wait_state(evaluation_id, frozenset({State.STATE_QUEUED}), 5)
        assert queued.attempt == 1
        mesh.executor()
        evaluation = await driver.wait_terminal(evaluation_id, within=20)
    assert evaluation.state == State.STATE_SUCCEEDED
    assert evaluation.attempt == 2
    assert evaluation.result.stdout == b"started\ndone\n"


async def test_a_job_given_back_reaches_an_idle_executor_at_once_not_at_its_recheck(
    make_mesh: MakeMesh,
) -> None:
    mesh = make_mesh({})
    first = mesh.executor()
    async with Driver(mesh) as driver:
        evaluation_id = await _started(driver, LONGER_THAN_GRACE)
        # Idle, and rechecking an empty queue once an hour: a redelivery must be hinted.
        mesh.executor({"EVALMESH_FETCH_RECHECK": "3600"})
        reply = await _drain(driver.executor_stub(first), grace_ms=200)
        assert (reply.finished, reply.returned) == (0, 1)
        evaluation = await driver.wait_terminal(evaluation_id, within=20)
    assert evaluation.state == State.STATE_SUCCEEDED
    assert evaluation.attempt == 2
    assert evaluation.result.stdout == b"started\ndone\n"
