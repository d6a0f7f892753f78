"""Executor heartbeats are read from a local view one watch keeps current: reads, however many,
create nothing on the NATS server, and the view follows puts, deletes and expiry."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc.aio
from nats.js import JetStreamContext, api
from scheduler_test_helpers import Mesh, start_scheduler, submit_request

from evalmesh.executor.v1 import pool_pb2
from evalmesh.scheduler.v1 import scheduler_service_pb2 as spb
from evalmesh_common.messaging import BucketView, NatsConnection
from evalmesh_common.subjects import EXECUTORS_BUCKET

Channels = Callable[[str], grpc.aio.Channel]


async def _consumers(js: JetStreamContext) -> int:
    """The server-side consumers on the executors bucket's stream."""
    return int((await js.stream_info(f"KV_{EXECUTORS_BUCKET}")).state.consumer_count)


def _status(instance_id: str, slots: int = 4) -> bytes:
    runtimes = [pool_pb2.RuntimeInfo(name="python")]  # what the submits below ask for
    status = pool_pb2.PoolStatus(
        instance_id=instance_id, slots=slots, healthy=True, runtimes=runtimes
    )
    return status.SerializeToString()


async def test_thousands_of_heartbeat_reads_leave_the_buckets_consumer_count_flat(
    mesh: Mesh, channels: Channels, js: JetStreamContext
) -> None:
    _, scheduler = await start_scheduler(mesh, channels)
    heartbeats = await js.key_value(EXECUTORS_BUCKET)
    await heartbeats.put("exec-1", _status("exec-1"))
    listing = spb.ListExecutorsRequest()
    (executor,) = (await scheduler.ListExecutors(listing, timeout=10)).executors
    assert executor.id == "exec-1"
    queued = (await scheduler.SubmitEvaluation(submit_request("waiting"), timeout=10)).record
    position = spb.GetQueuePositionRequest(tenant="tenant-a", id=queued.evaluation.id)
    before = await _consumers(js)
    assert before <= 1  # the scheduler's one watch

    for _ in range(15):
        listed = await asyncio.gather(
            *(scheduler.ListExecutors(listing, timeout=30) for _ in range(100))
        )
        assert all([e.id for e in reply.executors] == ["exec-1"] for reply in listed)
        # A queue position reads the pool's free slots from the same heartbeats.
        placed = await asyncio.gather(
            *(scheduler.GetQueuePosition(position, timeout=30) for _ in range(100))
        )
        assert all(reply.HasField("estimated_start_time") for reply in placed)

    assert await _consumers(js) == before
    # And the view still follows the bucket: a new executor appears at the next read.
    await heartbeats.put("exec-2", _status("exec-2"))
    executors = (await scheduler.ListExecutors(listing, timeout=10)).executors
    assert [e.id for e in executors] == ["exec-1", "exec-2"]


async def test_the_view_sees_a_put_and_a_delete_at_once_and_drops_an_expired_entry(
    bare_nats: Mesh,
) -> None:
    connection = NatsConnection(bare_nats.nats_url, name="view-test")
    client = await connection.wait_connected()
    js = client.jetstream()
    bucket = await js.create_key_value(api.KeyValueConfig(bucket="VIEW_TEST", history=1, ttl=1.5))
    await bucket.put("before", b"old")  # there before the view: part of its first snapshot
    view = BucketView(connection, "VIEW_TEST")
    try:
        assert await view.values() == [b"old"]
        await bucket.put("a", b"1")
        assert sorted(await view.values()) == [b"1", b"old"]
        await bucket.put("a", b"2")
        await bucket.delete("before")
        assert await view.values() == [b"2"]
        for _ in range(3):  # kept alive by puts, like a heartbeat
            await asyncio.sleep(0.5)
            await bucket.put("a", b"3")
        assert await view.values() == [b"3"]
        await asyncio.sleep(1.7)  # no update: aged out of the bucket, and out of the view
        assert await view.values() == []
    finally:
        await view.close()
        await connection.close()
