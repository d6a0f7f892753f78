"""Submitting: idempotent, one job per evaluation, a full queue creates nothing, and a crash
between the database commit and the publish is repaired by the reconciler."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import grpc
import grpc.aio
import pytest
from google.protobuf import timestamp_pb2
from nats.js import JetStreamContext
from scheduler_test_helpers import (
    Mesh,
    StorageStub,
    eventually,
    get_record,
    job_count,
    queued_job,
    scheduler_stub,
    start_scheduler,
    submit_request,
)

from evalmesh.scheduler.v1 import job_pb2
from evalmesh.scheduler.v1 import scheduler_service_pb2 as spb
from evalmesh.storage.v1 import storage_service_pb2
from evalmesh.v1 import evaluation_pb2
from evalmesh_common.server import error_from_rpc

QUEUED = evaluation_pb2.Evaluation.STATE_QUEUED
Channels = Callable[[str], grpc.aio.Channel]


async def test_submitting_twice_with_one_request_id_gives_one_evaluation_and_one_job(
    mesh: Mesh, channels: Channels, js: JetStreamContext, storage: StorageStub
) -> None:
    _, scheduler = await start_scheduler(mesh, channels)
    request = submit_request("same-request", priority=evaluation_pb2.PRIORITY_HIGH)

    first = await scheduler.SubmitEvaluation(request, timeout=10)
    second = await scheduler.SubmitEvaluation(request, timeout=10)

    assert first.created
    assert not second.created
    assert second.record.evaluation.id == first.record.evaluation.id
    assert await job_count(js) == 1
    message = await queued_job(js, first.record)
    assert message is not None
    assert message.headers is not None
    assert message.headers["Nats-Msg-Id"] == first.record.evaluation.id
    job = job_pb2.Job.FromString(message.data or b"")
    assert job.evaluation_id == first.record.evaluation.id
    assert job.tenant == "tenant-a"
    assert job.priority == evaluation_pb2.PRIORITY_HIGH
    assert job.runtime == "python"
    never = storage_service_pb2.ListUnpublishedRequest(
        published_before=timestamp_pb2.Timestamp(seconds=1), limit=10
    )

    async def recorded() -> bool:
        return not (await storage.ListUnpublished(never, timeout=5)).records

    # The submit answers once the job is queued; the note in storage follows in a batch.
    await eventually(recorded, within=5, what="the publication's note in storage")


async def test_a_full_queue_answers_resource_exhausted_and_creates_nothing(
    mesh: Mesh, channels: Channels, js: JetStreamContext, storage: StorageStub
) -> None:
    _, scheduler = await start_scheduler(mesh, channels, EVALMESH_QUEUE_MAX_JOBS="2")
    kept = [
        await scheduler.SubmitEvaluation(submit_request(f"fits-{i}"), timeout=10) for i in range(2)
    ]

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await scheduler.SubmitEvaluation(submit_request("one-too-many"), timeout=10)
    error = error_from_rpc(refused.value)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.reason == "QUEUE_FULL"
    listing = await storage.ListEvaluations(
        storage_service_pb2.ListEvaluationsRequest(tenant="tenant-a"), timeout=5
    )
    assert len(listing.records) == 2  # nothing half-created
    assert await job_count(js) == 2

    # Cancelling a queued evaluation drops its job at once, so the same request now fits.
    cancel = spb.CancelEvaluationRequest(tenant="tenant-a", id=kept[0].record.evaluation.id)
    await scheduler.CancelEvaluation(cancel, timeout=10)
    retried = await scheduler.SubmitEvaluation(submit_request("one-too-many"), timeout=10)
    assert retried.created
    assert await job_count(js) == 2

    # Full again: admission comes before storage, so even a retry is refused (documented), and
    # once there is room the retry finds the evaluation it created, without a second job.
    with pytest.raises(grpc.aio.AioRpcError) as full_again:
        await scheduler.SubmitEvaluation(submit_request("one-too-many"), timeout=10)
    assert full_again.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    cancel = spb.CancelEvaluationRequest(tenant="tenant-a", id=kept[1].record.evaluation.id)
    await scheduler.CancelEvaluation(cancel, timeout=10)
    again = await scheduler.SubmitEvaluation(submit_request("one-too-many"), timeout=10)
    assert not again.created
    assert again.record.evaluation.id == retried.record.evaluation.id
    assert await job_count(js) == 1


async def test_batch_submit_stores_and_queues_every_evaluation_in_request_order(
    mesh: Mesh, channels: Channels, js: JetStreamContext
) -> None:
    _, scheduler = await start_scheduler(mesh, channels)
    await scheduler.SubmitEvaluation(submit_request("batch-3"), timeout=10)
    batch = spb.BatchSubmitEvaluationsRequest(
        requests=[submit_request(f"batch-{i}") for i in range(40)]
    )

    response = await scheduler.BatchSubmitEvaluations(batch, timeout=20)

    assert [r.record.evaluation.request_id for r in response.responses] == [
        f"batch-{i}" for i in range(40)
    ]
    assert [r.created for r in response.responses].count(False) == 1  # batch-3 existed
    assert await job_count(js) == 40
    for item in response.responses:
        assert await queued_job(js, item.record) is not None


async def test_concurrent_submits_each_get_their_own_evaluation_and_one_job(
    mesh: Mesh, channels: Channels, js: JetStreamContext
) -> None:
    # Submits that arrive together share storage calls (evalmesh_scheduler.creates); what each
    # caller gets must be what it would get alone: repeats find their first evaluation, and a
    # reuse of a request_id with another spec is refused without failing its neighbours.
    _, scheduler = await start_scheduler(mesh, channels, EVALMESH_TENANT_MAX_QUEUED="0")
    requests = [submit_request(f"burst-{i}", tenant=f"tenant-{i % 3}") for i in range(60)]
    requests += [submit_request("burst-0", "tenant-0"), submit_request("burst-4", "tenant-1")]
    reuse = submit_request("burst-7", tenant="tenant-1")
    reuse.spec.code = "print('another spec')"

    outcomes = await asyncio.gather(
        *(scheduler.SubmitEvaluation(r, timeout=20) for r in [*requests, reuse]),
        return_exceptions=True,
    )

    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(refused) == 1, "one of burst-7's two specs is refused, whichever came second"
    assert isinstance(refused[0], grpc.aio.AioRpcError)
    assert refused[0].code() == grpc.StatusCode.ALREADY_EXISTS
    replies = [o for o in outcomes if not isinstance(o, BaseException)]
    ids: dict[tuple[str, str], set[str]] = {}
    for reply in replies:
        evaluation = reply.record.evaluation
        ids.setdefault((reply.record.tenant, evaluation.request_id), set()).add(evaluation.id)
    assert len(ids) == 60
    assert all(len(found) == 1 for found in ids.values()), "a repeat finds the first one"
    assert sum(reply.created for reply in replies) == 60
    assert await job_count(js) == 60


async def test_a_batch_mixing_tenants_is_refused_naming_the_field(
    mesh: Mesh, channels: Channels
) -> None:
    _, scheduler = await start_scheduler(mesh, channels)
    batch = spb.BatchSubmitEvaluationsRequest(
        requests=[submit_request("a"), submit_request("b", tenant="tenant-b")]
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await scheduler.BatchSubmitEvaluations(batch, timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "requests[1].tenant" in str(error_from_rpc(refused.value).violations)  # type: ignore[attr-defined]


async def test_a_crash_between_commit_and_publish_is_published_by_the_reconciler_after_restart(
    mesh: Mesh, channels: Channels, js: JetStreamContext, storage: StorageStub
) -> None:
    crashing, address = await mesh.start_scheduler(EVALMESH_TEST_CRASH_AFTER_COMMIT="1")
    with pytest.raises(grpc.aio.AioRpcError):
        await scheduler_stub(channels(address)).SubmitEvaluation(
            submit_request("crash-me"), timeout=10
        )
    crashing.stop(timeout=5)
    assert crashing.poll() == 137
    listing = await storage.ListEvaluations(
        storage_service_pb2.ListEvaluationsRequest(tenant="tenant-a"), timeout=5
    )
    (stored,) = listing.records
    assert stored.evaluation.state == QUEUED
    assert not stored.HasField("publish_time")  # committed, never published
    assert await job_count(js) == 0

    started = datetime.now(UTC)
    await start_scheduler(mesh, channels)

    async def published() -> bool:
        record = await get_record(storage, stored.evaluation.id)
        return await queued_job(js, stored) is not None and record.publish_count == 1

    await eventually(published, within=10, what="the reconciler's publish, recorded")
    record = await get_record(storage, stored.evaluation.id)
    assert record.publish_time.ToDatetime(UTC) >= started.replace(microsecond=0)
    assert await job_count(js) == 1


async def test_a_new_evaluation_is_left_to_its_submit_then_published_by_the_reconciler(
    mesh: Mesh, channels: Channels, js: JetStreamContext, storage: StorageStub
) -> None:
    # Reconciler passes every 0.2 s; an evaluation is its submit's for its first 3 s.
    await start_scheduler(mesh, channels, EVALMESH_PRESENCE_CHECK_AFTER="3")
    # Committed in storage and not published yet, as a submit leaves it between the two.
    request = submit_request("in-flight")
    created = await storage.CreateEvaluation(
        storage_service_pb2.CreateEvaluationRequest(
            tenant=request.tenant, request_id=request.request_id, spec=request.spec
        ),
        timeout=5,
    )
    stored = created.record
    await asyncio.sleep(1.0)  # five passes
    assert (await get_record(storage, stored.evaluation.id)).publish_count == 0
    assert await job_count(js) == 0

    async def published() -> bool:
        record = await get_record(storage, stored.evaluation.id)
        return await queued_job(js, stored) is not None and record.publish_count == 1

    await eventually(published, within=10, what="the reconciler's publish, once it is 3 s old")


async def test_a_tenant_at_its_queued_cap_is_refused_while_others_still_submit(
    mesh: Mesh, channels: Channels, js: JetStreamContext
) -> None:
    _, scheduler = await start_scheduler(mesh, channels, EVALMESH_TENANT_MAX_QUEUED="2")
    for i in range(2):
        await scheduler.SubmitEvaluation(submit_request(f"mine-{i}"), timeout=10)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await scheduler.SubmitEvaluation(submit_request("mine-2"), timeout=10)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_from_rpc(refused.value).reason == "TENANT_QUEUE_FULL"
    other = await scheduler.SubmitEvaluation(
        submit_request("theirs", tenant="tenant-b"), timeout=10
    )
    assert other.created
    assert await job_count(js) == 3
