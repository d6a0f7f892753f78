"""``evalmesh.scheduler.v1.SchedulerService`` handlers: translate protos to domain calls and back.

Domain errors raised below become gRPC statuses with ``google.rpc`` details in the shared
``ErrorInterceptor``; nothing here decides anything.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC
from typing import Any

import grpc.aio

from evalmesh.scheduler.v1 import scheduler_service_pb2 as pb
from evalmesh.scheduler.v1 import scheduler_service_pb2_grpc
from evalmesh_common import FieldViolation, InvalidArgument, Unavailable
from evalmesh_scheduler.deadletters import DeadLetters
from evalmesh_scheduler.drain import Drains
from evalmesh_scheduler.queue import Submitter
from evalmesh_scheduler.retention import Retention
from evalmesh_scheduler.runtimes import RuntimeOffers
from evalmesh_scheduler.stats import Stats

__all__ = ["SchedulerServicer"]

Context = grpc.aio.ServicerContext[Any, Any]
PURGE_BUDGET = 5.0  # seconds one PurgeEvaluations call deletes for; callers repeat until complete


class SchedulerServicer(scheduler_service_pb2_grpc.SchedulerServiceServicer):
    """The scheduler's RPCs."""

    def __init__(
        self,
        submitter: Submitter,
        dead: DeadLetters,
        stats: Stats,
        ready: Callable[[], bool],
        *,
        drains: Drains,
        retention: Retention,
        runtimes: RuntimeOffers,
    ) -> None:
        self.submitter = submitter
        self.runtimes = runtimes
        self.dead = dead
        self.stats = stats
        self.drains = drains
        self.retention = retention
        self._ready = ready

    def _require_ready(self) -> None:
        if not self._ready():
            raise Unavailable("the scheduler's work queue is not ready yet", reason="NOT_READY")

    async def SubmitEvaluation(
        self, request: pb.SubmitEvaluationRequest, context: Context
    ) -> pb.SubmitEvaluationResponse:
        self._require_ready()
        record, created = await self.submitter.submit(request)
        return pb.SubmitEvaluationResponse(record=record, created=created)

    async def BatchSubmitEvaluations(
        self, request: pb.BatchSubmitEvaluationsRequest, context: Context
    ) -> pb.BatchSubmitEvaluationsResponse:
        self._require_ready()
        results = await self.submitter.batch_submit(request.requests)
        return pb.BatchSubmitEvaluationsResponse(
            responses=[pb.SubmitEvaluationResponse(record=r, created=c) for r, c in results]
        )

    async def CancelEvaluation(
        self, request: pb.CancelEvaluationRequest, context: Context
    ) -> pb.CancelEvaluationResponse:
        self._require_ready()
        record = await self.submitter.cancel(request.tenant, request.id, request.reason)
        return pb.CancelEvaluationResponse(record=record)

    async def GetQueuePosition(
        self, request: pb.GetQueuePositionRequest, context: Context
    ) -> pb.GetQueuePositionResponse:
        self._require_ready()
        return await self.stats.queue_position(request.tenant, request.id)

    async def GetQueueStats(
        self, request: pb.GetQueueStatsRequest, context: Context
    ) -> pb.GetQueueStatsResponse:
        self._require_ready()
        return pb.GetQueueStatsResponse(stats=await self.stats.queue_stats())

    async def ListExecutors(
        self, request: pb.ListExecutorsRequest, context: Context
    ) -> pb.ListExecutorsResponse:
        self._require_ready()
        return pb.ListExecutorsResponse(executors=await self.stats.executors())

    async def ListRuntimes(
        self, request: pb.ListRuntimesRequest, context: Context
    ) -> pb.ListRuntimesResponse:
        self._require_ready()
        return pb.ListRuntimesResponse(runtimes=await self.runtimes.runtimes())

    async def ListDeadLetters(
        self, request: pb.ListDeadLettersRequest, context: Context
    ) -> pb.ListDeadLettersResponse:
        self._require_ready()
        letters, token = await self.dead.list(request.page_size, request.page_token)
        return pb.ListDeadLettersResponse(dead_letters=letters, next_page_token=token)

    async def RedriveDeadLetter(
        self, request: pb.RedriveDeadLetterRequest, context: Context
    ) -> pb.RedriveDeadLetterResponse:
        self._require_ready()
        return pb.RedriveDeadLetterResponse(record=await self.dead.redrive(request.sequence))

    async def GetDeadLetter(
        self, request: pb.GetDeadLetterRequest, context: Context
    ) -> pb.GetDeadLetterResponse:
        self._require_ready()
        return pb.GetDeadLetterResponse(dead_letter=await self.dead.get(request.sequence))

    async def DrainExecutor(
        self, request: pb.DrainExecutorRequest, context: Context
    ) -> pb.DrainExecutorResponse:
        grace = request.grace if request.HasField("grace") else None
        return pb.DrainExecutorResponse(executor=await self.drains.drain(request.id, grace))

    async def PurgeEvaluations(
        self, request: pb.PurgeEvaluationsRequest, context: Context
    ) -> pb.PurgeEvaluationsResponse:
        if not request.HasField("end_time_before"):
            violation = FieldViolation("end_time_before", "is required")
            raise InvalidArgument("end_time_before is required", [violation])
        cutoff = request.end_time_before.ToDatetime(tzinfo=UTC)
        purged, complete = await self.retention.purge_before(cutoff, PURGE_BUDGET)
        return pb.PurgeEvaluationsResponse(purged=purged, complete=complete)
