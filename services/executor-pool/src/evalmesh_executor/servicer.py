"""evalmesh.executor.v1.ExecutorService: translates between the protos and the instance."""

from __future__ import annotations

from typing import Any

import grpc.aio

from evalmesh.executor.v1 import executor_service_pb2 as pb
from evalmesh.executor.v1 import executor_service_pb2_grpc
from evalmesh_common import FieldViolation, InvalidArgument
from evalmesh_executor.instance import ExecutorInstance
from evalmesh_executor.runs import Stop

__all__ = ["ExecutorServicer"]

Context = grpc.aio.ServicerContext[Any, Any]
MAX_DRAIN_GRACE = 3600.0


def _invalid(field: str, description: str) -> InvalidArgument:
    return InvalidArgument(f"invalid {field}: {description}", [FieldViolation(field, description)])


class ExecutorServicer(executor_service_pb2_grpc.ExecutorServiceServicer):
    """The control surface of one executor-pool instance."""

    def __init__(self, instance: ExecutorInstance) -> None:
        self._instance = instance

    async def GetPoolStatus(
        self, request: pb.GetPoolStatusRequest, context: Context
    ) -> pb.GetPoolStatusResponse:
        return pb.GetPoolStatusResponse(status=self._instance.status.snapshot())

    async def ListRuntimes(
        self, request: pb.ListRuntimesRequest, context: Context
    ) -> pb.ListRuntimesResponse:
        return pb.ListRuntimesResponse(runtimes=self._instance.status.info.runtimes)

    async def CancelRun(
        self, request: pb.CancelRunRequest, context: Context
    ) -> pb.CancelRunResponse:
        if not request.evaluation_id:
            raise _invalid("evaluation_id", "must be set")
        found = self._instance.runs.stop(
            request.evaluation_id, Stop.CANCEL, "cancelled by CancelRun"
        )
        return pb.CancelRunResponse(found=found)

    async def Drain(self, request: pb.DrainRequest, context: Context) -> pb.DrainResponse:
        grace = float(self._instance.config.drain_grace)
        if request.HasField("grace"):
            grace = request.grace.ToNanoseconds() / 1e9
            if not 0 <= grace <= MAX_DRAIN_GRACE:
                raise _invalid("grace", f"must be between 0 and {MAX_DRAIN_GRACE:g} seconds")
        finished, returned = await self._instance.drain(grace)
        return pb.DrainResponse(finished=finished, returned=returned)
