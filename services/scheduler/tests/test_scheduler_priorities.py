"""Priorities at the fetch level: one executor slot pulling from the real consumers with the shared
policy starts jobs in the policy's order and never starves LOW; stats and positions agree."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import grpc.aio
import nats.errors
import pytest
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from scheduler_test_helpers import (
    Mesh,
    SchedulerStub,
    start_scheduler,
    submit_request,
)

from evalmesh.executor.v1 import pool_pb2
from evalmesh.scheduler.v1 import job_pb2
from evalmesh.scheduler.v1 import scheduler_service_pb2 as spb
from evalmesh.v1 import evaluation_pb2
from evalmesh_common.priority import WeightedPriority, estimate_starts_before, start_order
from evalmesh_common.subjects import (
    EXECUTORS_BUCKET,
    JOBS_STREAM,
    PRIORITY_NAMES,
    job_consumer,
    priority_name,
)

Channels = Callable[[str], grpc.aio.Channel]
VALUE = {
    "high": evaluation_pb2.PRIORITY_HIGH,
    "normal": evaluation_pb2.PRIORITY_NORMAL,
    "low": evaluation_pb2.PRIORITY_LOW,
}


class OneSlotExecutor:
    """The executor's fetch loop, reduced to one slot: the shared policy picks the consumer."""

    def __init__(self, js: JetStreamContext) -> None:
        self.js = js
        self.policy = WeightedPriority()
        self.subscriptions: dict[str, JetStreamContext.PullSubscription] = {}

    async def __aenter__(self) -> OneSlotExecutor:
        for name in PRIORITY_NAMES:
            self.subscriptions[name] = await self.js.pull_subscribe_bind(
                job_consumer(name), stream=JOBS_STREAM
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        for subscription in self.subscriptions.values():
            await subscription.unsubscribe()

    async def start_next(self) -> job_pb2.Job | None:
        """Take the next job the policy allows, ack it (it "ran"), and return it."""
        ready = {name for name in PRIORITY_NAMES if await self._has_work(name)}
        while (choice := self.policy.choose(ready)) is not None:
            message = await self._fetch(choice)
            if message is None:
                ready.discard(choice)  # empty: fall through to the next class
                continue
            self.policy.started(choice, ready)
            await message.ack_sync()
            return job_pb2.Job.FromString(message.data)
        return None

    async def _has_work(self, name: str) -> bool:
        info = await self.js.consumer_info(JOBS_STREAM, job_consumer(name))
        return bool(info.num_pending)

    async def _fetch(self, name: str) -> Msg | None:
        try:
            (message,) = await self.subscriptions[name].fetch(1, timeout=2)
        except nats.errors.TimeoutError:
            return None
        return message


async def submit(scheduler: SchedulerStub, name: str, request_id: str) -> str:
    request = submit_request(request_id, priority=VALUE[name])
    return (await scheduler.SubmitEvaluation(request, timeout=10)).record.evaluation.id


async def test_one_slot_with_a_backlog_of_all_three_starts_them_in_the_policy_order(
    mesh: Mesh, channels: Channels, js: JetStreamContext
) -> None:
    _, scheduler = await start_scheduler(mesh, channels)
    depths = {"low": 4, "normal": 4, "high": 8}
    submitted: dict[str, list[str]] = {name: [] for name in depths}
    for name, depth in depths.items():  # oldest first: LOW, then NORMAL, then HIGH
        for i in range(depth):
            submitted[name].append(await submit(scheduler, name, f"{name}-{i}"))

    started: list[job_pb2.Job] = []
    async with OneSlotExecutor(js) as executor:
        while (job := await executor.start_next()) is not None:
            started.append(job)

    assert [priority_name(job.priority) for job in started] == start_order(depths)
    for name in depths:  # first in, first out within a class
        assert [j.evaluation_id for j in started if priority_name(j.priority) == name] == (
            submitted[name]
        )


async def test_low_still_starts_under_sustained_high_load(
    mesh: Mesh, channels: Channels, js: JetStreamContext
) -> None:
    _, scheduler = await start_scheduler(mesh, channels)
    for i in range(3):
        await submit(scheduler, "low", f"low-{i}")
    for i in range(3):
        await submit(scheduler, "high", f"high-{i}")

    order: list[str] = []
    async with OneSlotExecutor(js) as executor:
        for i in range(21):
            job = await executor.start_next()
            assert job is not None
            order.append(priority_name(job.priority))
            if order[-1] == "high":  # HIGH keeps arriving: its queue never runs dry
                await submit(scheduler, "high", f"high-more-{i}")

    assert order.count("low") == 3  # one start in seven
    assert "low" in order[:7]


async def test_queue_stats_positions_and_executors_reflect_the_backlog_and_the_pool(
    mesh: Mesh, channels: Channels, js: JetStreamContext
) -> None:
    _, scheduler = await start_scheduler(mesh, channels)
    for i in range(3):
        await submit(scheduler, "high", f"high-{i}")
    lows = [await submit(scheduler, "low", f"low-{i}") for i in range(2)]

    stats = (await scheduler.GetQueueStats(spb.GetQueueStatsRequest(), timeout=10)).stats
    assert [(p.priority, p.depth) for p in stats.priorities] == [
        (evaluation_pb2.PRIORITY_HIGH, 3),
        (evaluation_pb2.PRIORITY_NORMAL, 0),
        (evaluation_pb2.PRIORITY_LOW, 2),
    ]
    assert stats.priorities[0].oldest_wait.ToNanoseconds() > 0
    assert (stats.running, stats.dead_letters) == (0, 0)

    request = spb.GetQueuePositionRequest(tenant="tenant-a", id=lows[1])
    position = await scheduler.GetQueuePosition(request, timeout=10)
    expected = estimate_starts_before({"high": 3, "normal": 0, "low": 2}, "low", 1)
    assert position.position == expected
    assert not position.HasField("estimated_start_time")  # no executors, no throughput yet

    heartbeats = await js.key_value(EXECUTORS_BUCKET)
    status = pool_pb2.PoolStatus(
        instance_id="exec-1",
        host="host-1",
        backend="bwrap",
        slots=8,
        runs=[pool_pb2.Run(evaluation_id="ev_running", attempt=1, tenant="tenant-a")],
        runtimes=[pool_pb2.RuntimeInfo(name="python")],
        healthy=True,
    )
    await heartbeats.put("exec-1", status.SerializeToString())
    (executor,) = (await scheduler.ListExecutors(spb.ListExecutorsRequest(), timeout=10)).executors
    assert (executor.id, executor.slots, executor.busy_slots) == ("exec-1", 8, 1)
    assert list(executor.running_evaluation_ids) == ["ev_running"]
    assert list(executor.runtimes) == ["python"]
    assert executor.healthy
    position = await scheduler.GetQueuePosition(request, timeout=10)
    assert position.HasField("estimated_start_time")  # 7 free slots: it can start now

    other = spb.GetQueuePositionRequest(tenant="tenant-b", id=lows[1])
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await scheduler.GetQueuePosition(other, timeout=10)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
