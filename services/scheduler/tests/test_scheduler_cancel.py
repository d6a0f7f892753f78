"""Cancel: QUEUED ends at once, RUNNING is told to stop, terminal is untouched, races end once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import grpc.aio
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from scheduler_test_helpers import (
    Mesh,
    StorageStub,
    claim,
    complete,
    get_record,
    job_count,
    queued_job,
    start_scheduler,
    submit_request,
)

from evalmesh.scheduler.v1 import job_pb2
from evalmesh.scheduler.v1 import scheduler_service_pb2 as spb
from evalmesh.v1 import evaluation_pb2
from evalmesh_common.subjects import CANCEL_SUBJECT

Channels = Callable[[str], grpc.aio.Channel]
State = evaluation_pb2.Evaluation
TERMINAL = {State.STATE_SUCCEEDED, State.STATE_CANCELLED}


def cancel_request(evaluation_id: str, reason: str = "") -> spb.CancelEvaluationRequest:
    return spb.CancelEvaluationRequest(tenant="tenant-a", id=evaluation_id, reason=reason)


async def test_cancelling_a_queued_evaluation_ends_it_at_once_and_drops_its_job(
    mesh: Mesh, channels: Channels, js: JetStreamContext
) -> None:
    _, scheduler = await start_scheduler(mesh, channels)
    submitted = (await scheduler.SubmitEvaluation(submit_request("queued"), timeout=10)).record

    cancelled = await scheduler.CancelEvaluation(
        cancel_request(submitted.evaluation.id, "changed my mind"), timeout=10
    )

    assert cancelled.record.evaluation.state == State.STATE_CANCELLED
    assert cancelled.record.evaluation.result.cause == evaluation_pb2.TERMINATION_CAUSE_CANCELLED
    assert await queued_job(js, submitted) is None
    again = await scheduler.CancelEvaluation(cancel_request(submitted.evaluation.id), timeout=10)
    assert again.record.evaluation.state == State.STATE_CANCELLED
    assert again.record.evaluation.end_time == cancelled.record.evaluation.end_time


async def test_cancelling_a_running_evaluation_sends_its_executor_a_cancel_command(
    mesh: Mesh, channels: Channels, natsc: Client, storage: StorageStub
) -> None:
    _, scheduler = await start_scheduler(mesh, channels)
    commands = await natsc.subscribe(CANCEL_SUBJECT)
    submitted = (await scheduler.SubmitEvaluation(submit_request("running"), timeout=10)).record
    running = await claim(storage, submitted.evaluation.id)

    response = await scheduler.CancelEvaluation(
        cancel_request(submitted.evaluation.id, "too slow"), timeout=10
    )

    assert response.record.evaluation.state == State.STATE_RUNNING
    assert response.record.evaluation.cancel_requested
    message = await commands.next_msg(timeout=1)  # the executor is told within a second
    command = job_pb2.CancelCommand.FromString(message.data)
    assert (command.evaluation_id, command.reason) == (submitted.evaluation.id, "too slow")
    # The executor stops the sandbox and reports; storage records the cancel, not the result.
    ended = await complete(storage, running)
    assert ended.evaluation.state == State.STATE_CANCELLED
    after = await scheduler.CancelEvaluation(cancel_request(submitted.evaluation.id), timeout=10)
    assert after.record.evaluation.state == State.STATE_CANCELLED
    with pytest.raises(TimeoutError):  # a terminal evaluation needs no command
        await commands.next_msg(timeout=0.3)


async def test_another_tenants_evaluation_cannot_be_cancelled_and_looks_missing(
    mesh: Mesh, channels: Channels, js: JetStreamContext
) -> None:
    _, scheduler = await start_scheduler(mesh, channels)
    submitted = (await scheduler.SubmitEvaluation(submit_request("mine"), timeout=10)).record
    foreign = spb.CancelEvaluationRequest(tenant="tenant-b", id=submitted.evaluation.id)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await scheduler.CancelEvaluation(foreign, timeout=10)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert await job_count(js) == 1


async def test_cancel_racing_completion_ends_in_exactly_one_terminal_state(
    mesh: Mesh, channels: Channels, storage: StorageStub
) -> None:
    _, scheduler = await start_scheduler(mesh, channels)
    outcomes = set()
    for round_ in range(12):
        request = submit_request(f"race-{round_}")
        submitted = (await scheduler.SubmitEvaluation(request, timeout=10)).record
        running = await claim(storage, submitted.evaluation.id)
        cancelled, completed = await asyncio.gather(
            scheduler.CancelEvaluation(cancel_request(submitted.evaluation.id), timeout=10),
            complete(storage, running),
        )
        final = (await get_record(storage, submitted.evaluation.id)).evaluation
        assert final.state in TERMINAL
        assert completed.evaluation.state == final.state  # the completion saw the final state
        if cancelled.record.evaluation.state in TERMINAL:  # the cancel came second
            assert cancelled.record.evaluation.state == final.state
        again = (await get_record(storage, submitted.evaluation.id)).evaluation
        assert (again.state, again.end_time) == (final.state, final.end_time)
        outcomes.add(final.state)
    assert outcomes <= TERMINAL
