"""``evalmesh.scheduler.v1.SchedulerService`` handlers: translate protos to domain calls and back.

Domain errors raised below become gRPC statuses with ``google.rpc`` details in the shared
``ErrorInterceptor``; nothing here decides anything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc.aio

from evalmesh.scheduler.v1 import scheduler_service_pb2 as pb
from evalmesh.scheduler.v1 import scheduler_service_pb2_grpc
from evalmesh_common import Unavailable
from evalmesh_scheduler.deadletters import DeadLetters
from evalmesh_scheduler.queue import Submitter
from evalmesh_scheduler.stats import Stats

__all__ = ["SchedulerServicer"]

Context = grpc.aio.ServicerContext[Any, Any]


class SchedulerServicer(scheduler_service_pb2_grpc.SchedulerServiceServicer):
    """The scheduler's RPCs."""

    def __init__(
        self, submitter: Submitter, dead: DeadLetters, stats: Stats, ready: Callable[[], bool]
    ) -> None:
        self.submitter = submitter
        self.dead = dead
        self.stats = stats
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
