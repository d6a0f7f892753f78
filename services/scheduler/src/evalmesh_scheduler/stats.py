"""Queue statistics, queue positions and the executor pool, from storage and NATS.

Storage is the truth for what waits (QUEUED counts per priority, oldest wait, completions in
the last minute); the dead-letter stream says how many letters wait; the executors bucket holds
each live executor's last heartbeat, read from a local view that one watch keeps current
(``BucketView``), so a client polling positions creates nothing on the NATS server. A queue
position applies the executors' priority policy (:mod:`evalmesh_common.priority`) to the
backlog, so it says when the evaluation will start rather than how many older jobs exist.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf import timestamp_pb2

from evalmesh.executor.v1 import pool_pb2
from evalmesh.scheduler.v1 import scheduler_service_pb2
from evalmesh.storage.v1 import storage_service_pb2
from evalmesh.v1 import cluster_pb2, evaluation_pb2
from evalmesh_common.messaging import BucketView
from evalmesh_common.priority import estimate_starts_before
from evalmesh_common.subjects import PRIORITY_NAMES, priority_name
from evalmesh_scheduler.deadletters import DeadLetters
from evalmesh_scheduler.jobs import nats_unavailable
from evalmesh_scheduler.storage_client import StorageClient

__all__ = ["Stats", "to_executor"]

State = evaluation_pb2.Evaluation.State
PositionResponse = scheduler_service_pb2.GetQueuePositionResponse
_PRIORITY_VALUE = {
    "high": evaluation_pb2.PRIORITY_HIGH,
    "normal": evaluation_pb2.PRIORITY_NORMAL,
    "low": evaluation_pb2.PRIORITY_LOW,
}


class Stats:
    """Read-only views of the queue and the pool."""

    def __init__(self, storage: StorageClient, executors: BucketView, dead: DeadLetters) -> None:
        self.storage = storage
        self._executors = executors
        self.dead = dead

    async def queue_stats(self) -> cluster_pb2.QueueStats:
        """Depth and oldest wait per priority (HIGH first), running, throughput, dead letters."""
        counts = await self.storage.stats()
        by_class = {priority_name(q.priority): q for q in counts.queued if q.priority}
        stats = cluster_pb2.QueueStats(
            priorities=[
                by_class.get(name) or cluster_pb2.PriorityQueueStats(priority=_PRIORITY_VALUE[name])
                for name in PRIORITY_NAMES
            ],
            running=_count(counts, State.STATE_RUNNING),
            completed_per_minute=float(counts.completed_last_minute),
            state_counts=counts.state_counts,
            dead_letters=await self.dead.count(),
        )
        stats.observe_time.GetCurrentTime()
        return stats

    async def queue_position(self, tenant: str, evaluation_id: str) -> PositionResponse:
        """How many starts come before a QUEUED evaluation, and when it should start."""
        record = await self.storage.get(evaluation_id, tenant, queue_position=True)
        evaluation = record.evaluation
        if evaluation.state != State.STATE_QUEUED or not evaluation.HasField("queue_position"):
            return PositionResponse()
        counts = await self.storage.stats()
        depths = {name: 0 for name in PRIORITY_NAMES}
        for queued in counts.queued:
            if queued.priority:
                depths[priority_name(queued.priority)] += queued.depth
        mine = priority_name(evaluation.spec.priority)
        higher = sum(depths[n] for n in PRIORITY_NAMES[: PRIORITY_NAMES.index(mine)])
        rank = max(0, evaluation.queue_position - higher)  # storage counts strict priority
        depths[mine] = max(depths[mine], rank + 1)
        position = estimate_starts_before(depths, mine, rank)
        response = PositionResponse(position=position)
        free = await self._free_slots()
        if position < free:
            response.estimated_start_time.GetCurrentTime()
        elif counts.completed_last_minute > 0:
            wait = (position - free + 1) * 60.0 / counts.completed_last_minute
            response.estimated_start_time.CopyFrom(_timestamp(wait))
        return response

    async def executors(self) -> list[cluster_pb2.Executor]:
        """The live executor instances, from their heartbeats, ordered by id."""
        statuses = await self._heartbeats()
        return sorted((to_executor(s) for s in statuses), key=lambda e: e.id)

    async def _free_slots(self) -> int:
        statuses = await self._heartbeats()
        return sum(max(0, s.slots - len(s.runs)) for s in statuses if s.healthy and not s.draining)

    async def _heartbeats(self) -> list[pool_pb2.PoolStatus]:
        async with nats_unavailable("cannot read executor heartbeats"):
            values = await self._executors.values()
        return [pool_pb2.PoolStatus.FromString(value) for value in values]


def to_executor(status: pool_pb2.PoolStatus) -> cluster_pb2.Executor:
    """The public view of one executor's heartbeat."""
    return cluster_pb2.Executor(
        id=status.instance_id,
        host=status.host,
        backend=status.backend,
        slots=status.slots,
        busy_slots=len(status.runs),
        running_evaluation_ids=[run.evaluation_id for run in status.runs],
        runtimes=[runtime.name for runtime in status.runtimes],
        healthy=status.healthy and not status.draining,
        unhealthy_reason=status.unhealthy_reason or ("draining" if status.draining else ""),
        start_time=status.start_time,
        heartbeat_time=status.report_time,
        completed=status.completed,
        draining=status.draining,
    )


def _count(counts: storage_service_pb2.GetStatsResponse, state: int) -> int:
    return sum(c.count for c in counts.state_counts if c.state == state)


def _timestamp(seconds_from_now: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(datetime.now(UTC) + timedelta(seconds=seconds_from_now))
    return stamp
