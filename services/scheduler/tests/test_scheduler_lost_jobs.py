"""A QUEUED evaluation without a live job is queued again within seconds, and every publish that
fails says why in the log."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import grpc.aio
import nats
import pytest
from nats.js import JetStreamContext
from scheduler_test_helpers import (
    Mesh,
    StorageStub,
    claim,
    eventually,
    get_record,
    log_text,
    queued_job,
    start_scheduler,
    submit_request,
)

from evalmesh.storage.v1 import record_pb2
from evalmesh.v1 import evaluation_pb2
from evalmesh_common.subjects import JOBS_STREAM, job_consumer
from evalmesh_scheduler.jobs import JobQueue

Channels = Callable[[str], grpc.aio.Channel]
State = evaluation_pb2.Evaluation
# The reconciler's long re-check stays at its default (5 minutes): recovery must not wait for it.
SLOW_RECHECK = {"EVALMESH_RECONCILE_AFTER": "300"}


async def _fill(js: JetStreamContext, count: int) -> None:
    """Fill the work queue with LOW jobs no evaluation owns (nobody pulls in these tests)."""
    for index in range(count):
        await js.publish(f"evalmesh.jobs.low.filler-{index}", b"", stream=JOBS_STREAM)


async def test_a_requeued_evaluation_whose_publish_failed_is_queued_again_within_seconds(
    mesh: Mesh, channels: Channels, js: JetStreamContext, storage: StorageStub
) -> None:
    process, scheduler = await start_scheduler(
        mesh,
        channels,
        # The stream's hard bound is then 17 jobs: easy to fill.
        EVALMESH_QUEUE_MAX_JOBS="1",
        EVALMESH_REQUEUE_BACKOFF_BASE="0.1",
        **SLOW_RECHECK,
    )
    submitted = (await scheduler.SubmitEvaluation(submit_request("lost"), timeout=10)).record
    evaluation_id = submitted.evaluation.id
    # An executor takes the job, acks it, claims the evaluation and dies.
    executor = await js.pull_subscribe_bind(job_consumer("normal"), stream=JOBS_STREAM)
    (message,) = await executor.fetch(1, timeout=5)
    await message.ack_sync()
    await executor.unsubscribe()
    await claim(storage, evaluation_id, lease=1.0)
    # Meanwhile the queue fills up, so the reaper's re-publish after the requeue fails.
    await _fill(js, 17)

    async def requeued() -> bool:
        return (await get_record(storage, evaluation_id)).evaluation.state == State.STATE_QUEUED

    await eventually(requeued, within=10, what="the requeue")

    async def publish_failed() -> bool:
        return "job not published" in log_text(process)

    await eventually(publish_failed, within=10, what="the failed re-publish")
    assert await queued_job(js, submitted) is None
    line = next(x for x in log_text(process).splitlines() if "job not published" in x)
    assert "code=503" in line, line
    assert "maximum messages exceeded" in line, line

    # Room again: the job is back within seconds, not after the reconciler's 5-minute re-check.
    await js.purge_stream(JOBS_STREAM, subject="evalmesh.jobs.low.*")

    async def queued() -> bool:
        return await queued_job(js, submitted) is not None

    await eventually(queued, within=5, what="the job's return")
    assert (await get_record(storage, evaluation_id)).evaluation.state == State.STATE_QUEUED


async def test_a_queued_evaluation_whose_job_was_acked_away_is_published_again_within_seconds(
    mesh: Mesh, channels: Channels, js: JetStreamContext, storage: StorageStub
) -> None:
    process, scheduler = await start_scheduler(
        mesh, channels, EVALMESH_PRESENCE_CHECK_AFTER="0.5", **SLOW_RECHECK
    )
    submitted = (await scheduler.SubmitEvaluation(submit_request("dropped"), timeout=10)).record
    evaluation_id = submitted.evaluation.id

    async def recorded() -> bool:
        return (await get_record(storage, evaluation_id)).publish_count == 1

    await eventually(recorded, within=5, what="the publication note")
    # An executor receives the job and acks it without claiming the evaluation (it died between
    # an ack and a publish, or acked a delivery it should have kept): no job, still QUEUED.
    executor = await js.pull_subscribe_bind(job_consumer("normal"), stream=JOBS_STREAM)
    (message,) = await executor.fetch(1, timeout=5)
    await message.ack_sync()
    await executor.unsubscribe()
    assert await queued_job(js, submitted) is None

    async def queued() -> bool:
        return await queued_job(js, submitted) is not None

    await eventually(queued, within=5, what="the job's return")
    job = await queued_job(js, submitted)
    assert job is not None
    assert job.headers is not None
    assert job.headers["Nats-Msg-Id"] == f"{evaluation_id}.r1"  # past the duplicate window

    async def logged() -> bool:
        return "missing from the work queue" in log_text(process)

    # The reconciler warns once it has noted the publication in storage, after the job is back.
    await eventually(logged, within=5, what="the reconciler's warning")
    # A job that is there is left alone: no second publication on later passes.
    await asyncio.sleep(1.5)
    assert (await get_record(storage, evaluation_id)).publish_count == 2


async def test_a_publish_nobody_acknowledges_is_logged_with_its_cause(
    bare_nats: Mesh, caplog: pytest.LogCaptureFixture
) -> None:
    client = await nats.connect(bare_nats.nats_url)
    # Something answers nothing on the job subjects (no stream): the acknowledgement never comes.
    silent = await client.subscribe("evalmesh.jobs.>")
    jobs = JobQueue(client, client.jetstream(), max_jobs=10, max_bytes=1 << 20, timeout=0.3)
    record = record_pb2.EvaluationRecord(tenant="tenant-a")
    record.evaluation.id = "ev_unacknowledged"
    try:
        with caplog.at_level(logging.INFO, logger="evalmesh_scheduler.jobs"):
            assert await jobs.publish([record]) == []
    finally:
        await silent.unsubscribe()
        await client.close()
    (line,) = [r.getMessage() for r in caplog.records if "job not published" in r.getMessage()]
    reason = line.partition("will retry: ")[2]
    assert reason.startswith("TimeoutError: JetStream did not acknowledge"), line
