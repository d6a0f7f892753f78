"""Faults around the scheduler: NATS restarted under load, and replicas sharing the leader lease."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

import grpc
import grpc.aio
from google.protobuf import timestamp_pb2
from nats.js import JetStreamContext
from scheduler_test_helpers import (
    Mesh,
    SchedulerStub,
    StorageStub,
    claim,
    eventually,
    get_record,
    job_count,
    log_text,
    queued_job,
    scheduler_stub,
    start_scheduler,
    submit_request,
)

from evalmesh.storage.v1 import storage_service_pb2
from evalmesh.v1 import evaluation_pb2
from evalmesh_common.server import wait_for_serving
from evalmesh_common.subjects import LEADER_BUCKET
from evalmesh_deploy.local.processes import ManagedProcess

Channels = Callable[[str], grpc.aio.Channel]
State = evaluation_pb2.Evaluation
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


async def submit_until_accepted(scheduler: SchedulerStub, request_id: str) -> str:
    """A client that retries with the same request_id until the submit is accepted."""
    while True:
        try:
            response = await scheduler.SubmitEvaluation(submit_request(request_id), timeout=2)
        except grpc.aio.AioRpcError as error:
            if error.code() not in RETRYABLE:
                raise
            await asyncio.sleep(0.1)
            continue
        return response.record.evaluation.id


async def test_nats_restarted_under_load_loses_nothing(
    mesh: Mesh, channels: Channels, js: JetStreamContext, storage: StorageStub
) -> None:
    _, address = await mesh.start_scheduler()
    scheduler = scheduler_stub(channels(address))
    total = 150
    pending = asyncio.Queue[str]()
    for i in range(total):
        pending.put_nowait(f"load-{i}")
    accepted: dict[str, str] = {}

    async def client() -> None:
        while not pending.empty():
            request_id = pending.get_nowait()
            accepted[request_id] = await submit_until_accepted(scheduler, request_id)
            await asyncio.sleep(0.05)

    clients = [asyncio.create_task(client()) for _ in range(4)]
    await asyncio.sleep(0.3)
    mesh.stop_nats()  # graceful, in the middle of the load
    assert not pending.empty()
    await asyncio.sleep(1.0)
    mesh.start_nats()
    await wait_for_serving(address, timeout=10)
    await asyncio.sleep(0.2)
    mesh.stop_nats(kill=True)  # and kill -9, still under load
    assert not pending.empty()
    await asyncio.sleep(0.5)
    mesh.start_nats()
    async with asyncio.timeout(60):
        await asyncio.gather(*clients)

    assert len(accepted) == total
    assert len(set(accepted.values())) == total

    async def all_queued_once() -> bool:
        try:
            return await job_count(js) == total
        except Exception:  # the test's own connection may still be reconnecting
            return False

    await eventually(all_queued_once, within=20, what="every job queued")
    for evaluation_id in accepted.values():
        record = await get_record(storage, evaluation_id)
        assert record.evaluation.state == State.STATE_QUEUED
        assert await queued_job(js, record) is not None
    never = storage_service_pb2.ListUnpublishedRequest(
        published_before=timestamp_pb2.Timestamp(seconds=1), limit=100
    )

    async def all_recorded() -> bool:
        return not (await storage.ListUnpublished(never, timeout=5)).records

    await eventually(all_recorded, within=10, what="every publication recorded")


async def test_two_replicas_elect_one_leader_and_only_it_reaps_until_it_dies(
    mesh: Mesh, channels: Channels, js: JetStreamContext, storage: StorageStub
) -> None:
    first, scheduler = await start_scheduler(mesh, channels, EVALMESH_INSTANCE_ID="sched-a")
    second, _ = await start_scheduler(mesh, channels, EVALMESH_INSTANCE_ID="sched-b")
    leases = await js.key_value(LEADER_BUCKET)

    async def leader() -> str:
        return bytes((await leases.get("scheduler")).value or b"").decode()

    assert await leader() == "sched-a"
    lost = (await scheduler.SubmitEvaluation(submit_request("lost-1"), timeout=10)).record
    await claim(storage, lost.evaluation.id, lease=0.2)

    async def requeued(evaluation_id: str) -> bool:
        record = await get_record(storage, evaluation_id)
        return record.evaluation.state == State.STATE_QUEUED

    async def reaped_by(replica: ManagedProcess) -> bool:
        # The reaper logs after storage answered, so a reader of storage can be first.
        return "lease expired; evaluation requeued" in log_text(replica)

    await eventually(lambda: requeued(lost.evaluation.id), what="the requeue by the leader")
    await eventually(lambda: reaped_by(first), what="the leader's log of its requeue")
    await asyncio.sleep(1.0)  # many reaper ticks for both replicas
    assert "became the leader" not in log_text(second)
    assert "lease expired" not in log_text(second)

    first.send_signal(signal.SIGKILL)  # no resignation: the lease has to expire

    async def second_leads() -> bool:
        try:
            return await leader() == "sched-b"
        except Exception:  # between the expiry and the take-over the key is absent
            return False

    await eventually(second_leads, within=10, what="fail-over to the second replica")
    orphan = await queued_job(js, lost)
    assert orphan is not None
    await claim(storage, lost.evaluation.id, lease=0.2)
    await eventually(lambda: requeued(lost.evaluation.id), what="the requeue by the new leader")
    await eventually(lambda: reaped_by(second), what="the new leader's log of its requeue")
