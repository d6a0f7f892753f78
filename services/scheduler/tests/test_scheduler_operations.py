"""Operator tasks the scheduler carries out: retention on a schedule, purges on request, and
executor drains sent over NATS to the instance named."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import grpc
import grpc.aio
import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from scheduler_test_helpers import Mesh, StorageStub, eventually, start_scheduler, submit_request

from evalmesh.executor.v1 import executor_service_pb2, pool_pb2
from evalmesh.scheduler.v1 import scheduler_service_pb2 as spb
from evalmesh.storage.v1 import storage_service_pb2 as storage_pb
from evalmesh.v1 import evaluation_pb2
from evalmesh_common.subjects import EXECUTORS_BUCKET, drain_subject

Channels = Callable[[str], grpc.aio.Channel]
State = evaluation_pb2.Evaluation


async def _exists(storage: StorageStub, evaluation_id: str) -> bool:
    try:
        await storage.GetEvaluation(storage_pb.GetEvaluationRequest(id=evaluation_id), timeout=5)
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.NOT_FOUND:
            raise
        return False
    return True


def _timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


async def test_the_leaders_retention_pass_deletes_terminal_evaluations_past_the_age_only(
    mesh: Mesh, channels: Channels, storage: StorageStub
) -> None:
    _, scheduler = await start_scheduler(
        mesh, channels, EVALMESH_RETENTION_AGE="1s", EVALMESH_RETENTION_INTERVAL="0.3s"
    )
    ended = (await scheduler.SubmitEvaluation(submit_request("old"), timeout=10)).record
    waiting = (await scheduler.SubmitEvaluation(submit_request("waiting"), timeout=10)).record
    cancel = spb.CancelEvaluationRequest(tenant="tenant-a", id=ended.evaluation.id)
    await scheduler.CancelEvaluation(cancel, timeout=10)

    async def purged() -> bool:
        return not await _exists(storage, ended.evaluation.id)

    await eventually(purged, within=15, what="the retention pass to delete the old evaluation")
    # QUEUED work is never deleted, however old.
    assert await _exists(storage, waiting.evaluation.id)


async def test_a_purge_deletes_what_ended_before_the_cutoff_and_needs_one(
    mesh: Mesh, channels: Channels, storage: StorageStub
) -> None:
    _, scheduler = await start_scheduler(mesh, channels, EVALMESH_RETENTION_AGE="0")
    ids = []
    for n in range(3):
        record = (await scheduler.SubmitEvaluation(submit_request(f"p{n}"), timeout=10)).record
        cancel = spb.CancelEvaluationRequest(tenant="tenant-a", id=record.evaluation.id)
        await scheduler.CancelEvaluation(cancel, timeout=10)
        ids.append(record.evaluation.id)
    kept = (await scheduler.SubmitEvaluation(submit_request("kept"), timeout=10)).record

    before_them = spb.PurgeEvaluationsRequest(
        end_time_before=_timestamp(datetime.now(UTC) - timedelta(hours=1))
    )
    nothing = await scheduler.PurgeEvaluations(before_them, timeout=10)
    assert (nothing.purged, nothing.complete) == (0, True)

    after_them = spb.PurgeEvaluationsRequest(
        end_time_before=_timestamp(datetime.now(UTC) + timedelta(seconds=1))
    )
    reply = await scheduler.PurgeEvaluations(after_them, timeout=10)
    assert (reply.purged, reply.complete) == (3, True)
    assert [await _exists(storage, i) for i in ids] == [False] * 3
    assert await _exists(storage, kept.evaluation.id)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await scheduler.PurgeEvaluations(spb.PurgeEvaluationsRequest(), timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_drain_request_reaches_the_named_executor_over_nats_and_returns_its_answer(
    mesh: Mesh, channels: Channels, js: JetStreamContext, natsc: Client
) -> None:
    _, scheduler = await start_scheduler(mesh, channels)
    instance = "executor.host-1"  # ids may hold dots
    status = pool_pb2.PoolStatus(instance_id=instance, slots=2, healthy=True)
    await (await js.key_value(EXECUTORS_BUCKET)).put(instance, status.SerializeToString())
    asked: list[executor_service_pb2.DrainRequest] = []

    async def answer(msg: Msg) -> None:  # what the executor's DrainListener does
        asked.append(executor_service_pb2.DrainRequest.FromString(msg.data))
        drained = pool_pb2.PoolStatus(
            instance_id=instance, slots=2, draining=True, unhealthy_reason="draining"
        )
        await msg.respond(drained.SerializeToString())

    await natsc.subscribe(drain_subject(instance), cb=answer)
    grace = duration_pb2.Duration(seconds=2)
    request = spb.DrainExecutorRequest(id=instance, grace=grace)
    executor = (await scheduler.DrainExecutor(request, timeout=10)).executor
    assert (executor.id, executor.draining, executor.healthy) == (instance, True, False)
    assert executor.unhealthy_reason == "draining"
    assert [a.grace.seconds for a in asked] == [2]

    unknown = spb.DrainExecutorRequest(id="executor-nobody")
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await scheduler.DrainExecutor(unknown, timeout=10)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    too_long = spb.DrainExecutorRequest(id=instance, grace=duration_pb2.Duration(seconds=7200))
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await scheduler.DrainExecutor(too_long, timeout=10)
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(asked) == 1


async def test_a_drain_of_an_executor_that_went_away_answers_not_found(
    mesh: Mesh, channels: Channels, js: JetStreamContext
) -> None:
    _, scheduler = await start_scheduler(mesh, channels)
    status = pool_pb2.PoolStatus(instance_id="executor-gone", slots=2, healthy=True)
    await (await js.key_value(EXECUTORS_BUCKET)).put("executor-gone", status.SerializeToString())
    request = spb.DrainExecutorRequest(id="executor-gone")
    with pytest.raises(grpc.aio.AioRpcError) as gone:  # a heartbeat, but nobody listening
        await scheduler.DrainExecutor(request, timeout=10)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
