"""Delivery failures: redelivery, dead letters and their redrive, expired leases and the reaper."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC

import grpc
import grpc.aio
import pytest
from nats.js import JetStreamContext
from scheduler_test_helpers import (
    Mesh,
    StorageStub,
    claim,
    eventually,
    get_record,
    job_count,
    queued_job,
    start_scheduler,
    submit_request,
)

from evalmesh.scheduler.v1 import scheduler_service_pb2 as spb
from evalmesh.v1 import evaluation_pb2
from evalmesh_common.subjects import JOBS_STREAM, job_consumer, job_message_subject

Channels = Callable[[str], grpc.aio.Channel]
State = evaluation_pb2.Evaluation


async def test_a_job_never_acked_is_redelivered_then_dead_lettered_and_its_evaluation_ends_error(
    mesh: Mesh, channels: Channels, js: JetStreamContext, storage: StorageStub
) -> None:
    _, scheduler = await start_scheduler(
        mesh, channels, EVALMESH_QUEUE_ACK_WAIT="0.5", EVALMESH_QUEUE_MAX_DELIVER="3"
    )
    submitted = (await scheduler.SubmitEvaluation(submit_request("stuck"), timeout=10)).record
    evaluation_id = submitted.evaluation.id
    # A misbehaving executor: takes the job every time it comes back and never acks it.
    executor = await js.pull_subscribe_bind(job_consumer("normal"), stream=JOBS_STREAM)
    deliveries = []
    for _ in range(3):
        (message,) = await executor.fetch(1, timeout=5)
        deliveries.append(message.metadata.num_delivered)
    assert deliveries == [1, 2, 3]  # each redelivered once ack_wait passed
    # It keeps pulling (JetStream gives up on a job when it would deliver it again), in vain.
    with pytest.raises(TimeoutError):
        await executor.fetch(1, timeout=2)

    async def ended() -> bool:
        return (await get_record(storage, evaluation_id)).evaluation.state == State.STATE_ERROR

    await eventually(ended, within=10, what="ERROR after max deliveries")
    record = await get_record(storage, evaluation_id)
    assert record.evaluation.result.fault == evaluation_pb2.FAULT_PLATFORM
    assert record.evaluation.result.cause == evaluation_pb2.TERMINATION_CAUSE_MAX_ATTEMPTS
    assert "delivered 3 times" in record.evaluation.result.detail
    letters = await scheduler.ListDeadLetters(spb.ListDeadLettersRequest(), timeout=10)
    (letter,) = letters.dead_letters
    assert (letter.evaluation_id, letter.deliveries) == (evaluation_id, 3)
    assert letter.tenant == "tenant-a"
    assert letter.priority == evaluation_pb2.PRIORITY_NORMAL
    assert "max deliveries" in letter.reason
    assert not letters.next_page_token
    one = spb.GetDeadLetterRequest(sequence=letter.sequence)
    assert (await scheduler.GetDeadLetter(one, timeout=10)).dead_letter == letter
    assert await queued_job(js, submitted) is None  # removed from the work queue
    assert await job_count(js) == 0
    await executor.unsubscribe()

    request = spb.RedriveDeadLetterRequest(sequence=letter.sequence)
    redriven = (await scheduler.RedriveDeadLetter(request, timeout=10)).record
    assert redriven.evaluation.id != evaluation_id
    assert redriven.evaluation.state == State.STATE_QUEUED
    assert redriven.evaluation.spec.labels["evalmesh.dev/redrive-of"] == evaluation_id
    assert await queued_job(js, redriven) is not None
    after = await scheduler.ListDeadLetters(spb.ListDeadLettersRequest(), timeout=10)
    assert not after.dead_letters
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await scheduler.RedriveDeadLetter(request, timeout=10)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as read:
        await scheduler.GetDeadLetter(one, timeout=10)
    assert read.value.code() == grpc.StatusCode.NOT_FOUND


async def test_dead_letters_are_listed_in_pages(
    mesh: Mesh, channels: Channels, js: JetStreamContext, storage: StorageStub
) -> None:
    _, scheduler = await start_scheduler(
        mesh, channels, EVALMESH_QUEUE_ACK_WAIT="0.3", EVALMESH_QUEUE_MAX_DELIVER="1"
    )
    ids = [
        (await scheduler.SubmitEvaluation(submit_request(f"doomed-{i}"), timeout=10)).record
        for i in range(5)
    ]
    executor = await js.pull_subscribe_bind(job_consumer("normal"), stream=JOBS_STREAM)
    assert len(await executor.fetch(5, timeout=5)) == 5  # and never acked

    async def all_dead() -> bool:
        states = [(await get_record(storage, r.evaluation.id)).evaluation.state for r in ids]
        return states == [State.STATE_ERROR] * 5

    await eventually(all_dead, within=10, what="five dead letters")
    pages, token = [], ""
    while True:
        request = spb.ListDeadLettersRequest(page_size=2, page_token=token)
        page = await scheduler.ListDeadLetters(request, timeout=10)
        pages.append([letter.evaluation_id for letter in page.dead_letters])
        token = page.next_page_token
        if not token:
            break
    assert [len(page) for page in pages] == [2, 2, 1]
    assert sorted(i for page in pages for i in page) == sorted(r.evaluation.id for r in ids)
    stats = (await scheduler.GetQueueStats(spb.GetQueueStatsRequest(), timeout=10)).stats
    assert stats.dead_letters == 5
    await executor.unsubscribe()


async def test_an_expired_lease_is_requeued_for_the_next_attempt_then_ends_error_at_the_limit(
    mesh: Mesh, channels: Channels, js: JetStreamContext, storage: StorageStub
) -> None:
    _, scheduler = await start_scheduler(mesh, channels, EVALMESH_MAX_ATTEMPTS="2")
    submitted = (await scheduler.SubmitEvaluation(submit_request("lost"), timeout=10)).record
    evaluation_id = submitted.evaluation.id
    # Attempt 1: an executor takes the job, acks it too early, claims, and dies (stops renewing).
    executor = await js.pull_subscribe_bind(job_consumer("normal"), stream=JOBS_STREAM)
    (message,) = await executor.fetch(1, timeout=5)
    await message.ack_sync()
    first = await claim(storage, evaluation_id, lease=0.3)
    assert first.evaluation.attempt == 1
    assert await job_count(js) == 0

    async def requeued() -> bool:
        return (await get_record(storage, evaluation_id)).evaluation.state == State.STATE_QUEUED

    await eventually(requeued, within=10, what="the requeue")
    assert (await get_record(storage, evaluation_id)).evaluation.attempt == 1

    # The reaper re-publishes the job after a backoff; a new Nats-Msg-Id gets it past the
    # duplicate window.
    async def queued() -> bool:
        return await queued_job(js, submitted) is not None

    await eventually(queued, within=10, what="the re-publication")
    job = await queued_job(js, submitted)
    assert job is not None
    assert job.headers is not None
    assert job.headers["Nats-Msg-Id"] == f"{evaluation_id}.1"

    # Attempt 2 is lost as well: that was the last allowed attempt.
    second = await claim(storage, evaluation_id, lease=0.3)
    assert second.evaluation.attempt == 2

    async def failed() -> bool:
        return (await get_record(storage, evaluation_id)).evaluation.state == State.STATE_ERROR

    await eventually(failed, within=10, what="ERROR after the last attempt")
    result = (await get_record(storage, evaluation_id)).evaluation.result
    assert result.cause == evaluation_pb2.TERMINATION_CAUSE_MAX_ATTEMPTS
    assert result.fault == evaluation_pb2.FAULT_PLATFORM
    assert "attempt 2 lost" in result.detail
    await asyncio.sleep(0.5)  # several reaper passes: the terminal state stays
    assert (await get_record(storage, evaluation_id)).evaluation.state == State.STATE_ERROR
    await executor.unsubscribe()


async def test_a_lost_attempts_job_comes_back_after_a_backoff_that_doubles_per_lost_attempt(
    mesh: Mesh, channels: Channels, js: JetStreamContext, storage: StorageStub
) -> None:
    _, scheduler = await start_scheduler(
        mesh,
        channels,
        EVALMESH_REAP_INTERVAL="0.1",
        # A busy reconciler: it must not publish a requeued job before its backoff ends.
        EVALMESH_RECONCILE_INTERVAL="0.02",
        EVALMESH_REQUEUE_BACKOFF_BASE="1.2",
        EVALMESH_MAX_ATTEMPTS="3",
    )
    submitted = (await scheduler.SubmitEvaluation(submit_request("flaky"), timeout=10)).record
    evaluation_id = submitted.evaluation.id
    executor = await js.pull_subscribe_bind(job_consumer("normal"), stream=JOBS_STREAM)
    waited = []
    for attempt in (1, 2):
        # An executor takes the job, claims it and dies: the lease runs out.
        (message,) = await executor.fetch(1, timeout=10)
        await message.ack_sync()
        lost = await claim(storage, evaluation_id, lease=0.2)
        assert lost.evaluation.attempt == attempt

        async def queued(msg_id: str = f"{evaluation_id}.{attempt}") -> bool:
            job = await queued_job(js, submitted)  # this attempt's job, not the one just acked
            return job is not None and (job.headers or {}).get("Nats-Msg-Id") == msg_id

        await eventually(queued, within=10, what=f"the re-publication after attempt {attempt}")
        job = await queued_job(js, submitted)
        assert job is not None
        assert job.time is not None
        expired = lost.lease_expire_time.ToDatetime(tzinfo=UTC)
        waited.append((job.time - expired).total_seconds())
    # Equal jitter: the n-th lost attempt waits between half and all of 1.2 s * 2**(n-1) after
    # its requeue, which comes after the lease ended. Only lower bounds are asserted: a loaded
    # machine makes waits longer, never shorter.
    assert waited[0] >= 0.6, waited
    assert waited[1] >= 1.2, waited
    await executor.unsubscribe()


async def test_a_poison_job_that_cannot_be_parsed_still_ends_its_evaluation_error(
    mesh: Mesh, channels: Channels, js: JetStreamContext, storage: StorageStub
) -> None:
    _, scheduler = await start_scheduler(
        mesh, channels, EVALMESH_QUEUE_ACK_WAIT="0.5", EVALMESH_QUEUE_MAX_DELIVER="2"
    )
    submitted = (await scheduler.SubmitEvaluation(submit_request("poison"), timeout=10)).record
    evaluation_id = submitted.evaluation.id
    subject = job_message_subject("normal", evaluation_id)
    # Replace the job with bytes no executor (or scheduler) can parse.
    await js.purge_stream(JOBS_STREAM, subject=subject)
    await js.publish(subject, b"\xff\xfe not a job \x00")
    executor = await js.pull_subscribe_bind(job_consumer("normal"), stream=JOBS_STREAM)
    for _ in range(2):
        await executor.fetch(1, timeout=5)
    with pytest.raises(TimeoutError):
        await executor.fetch(1, timeout=2)

    async def ended() -> bool:
        return (await get_record(storage, evaluation_id)).evaluation.state == State.STATE_ERROR

    await eventually(ended, within=10, what="ERROR for a poison job")
    assert await job_count(js) == 0
    await executor.unsubscribe()
