"""A tiny real gRPC server speaking evalmesh.v1 with scripted answers, for the client's unit tests.

It runs a ``grpc.aio`` server on port 0 in its own thread and event loop, so both the blocking and
the asyncio client can call it. Each method answers the scripted errors queued for it first (as
real statuses with ``google.rpc`` details in the trailer), then a plain, plausible answer. The
integration tests use the real mesh instead.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import threading
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import grpc.aio
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from evalmesh.v1 import (
    api_key_pb2,
    api_key_service_pb2,
    api_key_service_pb2_grpc,
    cluster_pb2,
    cluster_service_pb2,
    cluster_service_pb2_grpc,
    evaluation_pb2,
    evaluation_service_pb2,
    evaluation_service_pb2_grpc,
)

Context = grpc.aio.ServicerContext[Any, Any]
Watch = list["evaluation_service_pb2.WatchEvaluationResponse | grpc.Status"]
_svc = evaluation_service_pb2


@dataclasses.dataclass(frozen=True)
class RawStatus(grpc.Status):
    """A status with exactly the trailing metadata given (e.g. a garbled details trailer)."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def rich_status(
    code: grpc.StatusCode,
    message: str,
    *,
    reason: str = "",
    violations: Sequence[tuple[str, str]] = (),
    retry_after: float | None = None,
) -> grpc.Status:
    """A status whose trailer carries ErrorInfo, BadRequest and RetryInfo as the gateway sends."""
    details = []
    if reason:
        details.append(error_details_pb2.ErrorInfo(reason=reason, domain="evalmesh.dev"))
    if violations:
        field_violations = [
            error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
            for field, description in violations
        ]
        details.append(error_details_pb2.BadRequest(field_violations=field_violations))
    if retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(round(retry_after * 1e9))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    packed = []
    for detail in details:
        item = any_pb2.Any()
        item.Pack(detail)
        packed.append(item)
    status = status_pb2.Status(code=code.value[0], message=message, details=packed)
    converted: grpc.Status = rpc_status.to_status(status)
    return converted


def output(stream: str, offset: int, data: bytes) -> evaluation_service_pb2.WatchEvaluationResponse:
    """A watch response carrying one output chunk."""
    number = (
        evaluation_pb2.OUTPUT_STREAM_STDERR
        if stream == "stderr"
        else evaluation_pb2.OUTPUT_STREAM_STDOUT
    )
    chunk = evaluation_pb2.OutputChunk(stream=number, offset=offset, data=data)
    return _svc.WatchEvaluationResponse(output=chunk)


def snapshot(
    evaluation_id: str, state: evaluation_pb2.Evaluation.State.ValueType, attempt: int = 0
) -> evaluation_service_pb2.WatchEvaluationResponse:
    """A watch response carrying a state snapshot."""
    return _svc.WatchEvaluationResponse(
        evaluation=evaluation_pb2.Evaluation(id=evaluation_id, state=state, attempt=attempt)
    )


class FakeGateway:
    """The server; ``errors[method]`` and ``watches`` script what the next calls answer."""

    def __init__(self) -> None:
        self.address = ""
        self.calls: list[tuple[str, Any, dict[str, str]]] = []
        # None in a list means "answer this call normally", so a later call can be the one to fail.
        self.errors: dict[str, list[grpc.Status | None]] = collections.defaultdict(list)
        self.deadlines: list[float | None] = []
        self.delay = 0.0  # seconds every call waits before answering
        self.watches: list[Watch] = []
        # RunEvaluation answers these in turn (as RunEvaluationResponse); none left: UNIMPLEMENTED,
        # as from a gateway without it.
        self.runs: list[Watch] = []
        self.evaluations: dict[str, evaluation_pb2.Evaluation] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()

    def start(self) -> FakeGateway:
        """Start serving; return once the port is known."""
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fake gateway did not start")
        return self

    def stop(self) -> None:
        """Stop serving and join the thread."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def requests(self, method: str) -> list[Any]:
        """The requests ``method`` received, in order."""
        return [request for name, request, _ in self.calls if name == method]

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = grpc.aio.server()
        evaluation_service_pb2_grpc.add_EvaluationServiceServicer_to_server(
            _Evaluations(self), server
        )
        cluster_service_pb2_grpc.add_ClusterServiceServicer_to_server(
            _Cluster(self),  # type: ignore[abstract]
            server,
        )
        api_key_service_pb2_grpc.add_ApiKeyServiceServicer_to_server(
            _Keys(self),  # type: ignore[abstract]
            server,
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self.address = f"127.0.0.1:{port}"
        self._ready.set()
        await self._stop.wait()
        await server.stop(0)

    async def answer(self, method: str, request: Any, context: Context) -> None:
        """Record the call, then abort with the next scripted error for ``method``, if any."""
        metadata = {key: str(value) for key, value in context.invocation_metadata() or ()}
        self.calls.append((method, request, metadata))
        self.deadlines.append(context.time_remaining())
        await asyncio.sleep(self.delay)
        status = self.errors[method].pop(0) if self.errors[method] else None
        if status is not None:
            await context.abort(status.code, status.details, status.trailing_metadata)

    def evaluation(self, request: _svc.CreateEvaluationRequest) -> evaluation_pb2.Evaluation:
        """The evaluation a request_id creates: one id per request_id, as the real mesh does."""
        evaluation_id = f"ev-{abs(hash(request.request_id)) % 10**12:012d}"
        return self.evaluations.setdefault(
            evaluation_id,
            evaluation_pb2.Evaluation(
                id=evaluation_id,
                request_id=request.request_id,
                spec=request.spec,
                state=evaluation_pb2.Evaluation.STATE_QUEUED,
            ),
        )


class _Evaluations(evaluation_service_pb2_grpc.EvaluationServiceServicer):
    def __init__(self, fake: FakeGateway) -> None:
        self.fake = fake

    async def CreateEvaluation(
        self, request: _svc.CreateEvaluationRequest, context: Context
    ) -> _svc.CreateEvaluationResponse:
        await self.fake.answer("CreateEvaluation", request, context)
        return _svc.CreateEvaluationResponse(evaluation=self.fake.evaluation(request), created=True)

    async def BatchCreateEvaluations(
        self, request: _svc.BatchCreateEvaluationsRequest, context: Context
    ) -> _svc.BatchCreateEvaluationsResponse:
        await self.fake.answer("BatchCreateEvaluations", request, context)
        return _svc.BatchCreateEvaluationsResponse(
            evaluations=[self.fake.evaluation(item) for item in request.requests]
        )

    async def GetEvaluation(
        self, request: _svc.GetEvaluationRequest, context: Context
    ) -> _svc.GetEvaluationResponse:
        await self.fake.answer("GetEvaluation", request, context)
        if request.id not in self.fake.evaluations:
            status = rich_status(
                grpc.StatusCode.NOT_FOUND, f"evaluation {request.id} not found", reason="NOT_FOUND"
            )
            await context.abort(status.code, status.details, status.trailing_metadata)
        return _svc.GetEvaluationResponse(evaluation=self.fake.evaluations[request.id])

    async def ListEvaluations(
        self, request: _svc.ListEvaluationsRequest, context: Context
    ) -> _svc.ListEvaluationsResponse:
        await self.fake.answer("ListEvaluations", request, context)
        items = list(self.fake.evaluations.values())
        start = int(request.page_token or 0)
        end = start + (request.page_size or 50)
        return _svc.ListEvaluationsResponse(
            evaluations=items[start:end], next_page_token=str(end) if end < len(items) else ""
        )

    async def CancelEvaluation(
        self, request: _svc.CancelEvaluationRequest, context: Context
    ) -> _svc.CancelEvaluationResponse:
        await self.fake.answer("CancelEvaluation", request, context)
        cancelled = evaluation_pb2.Evaluation(
            id=request.id, state=evaluation_pb2.Evaluation.STATE_CANCELLED
        )
        return _svc.CancelEvaluationResponse(evaluation=cancelled)

    async def WatchEvaluation(
        self, request: _svc.WatchEvaluationRequest, context: Context
    ) -> AsyncIterator[_svc.WatchEvaluationResponse]:
        await self.fake.answer("WatchEvaluation", request, context)
        script = self.fake.watches.pop(0) if self.fake.watches else []
        for item in script:
            if isinstance(item, _svc.WatchEvaluationResponse):
                yield item
            else:
                await context.abort(item.code, item.details, item.trailing_metadata)

    async def RunEvaluation(
        self, request: _svc.RunEvaluationRequest, context: Context
    ) -> AsyncIterator[_svc.RunEvaluationResponse]:
        await self.fake.answer("RunEvaluation", request, context)
        if not self.fake.runs:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "RunEvaluation is not scripted")
        for item in self.fake.runs.pop(0):
            if isinstance(item, _svc.WatchEvaluationResponse):
                yield _svc.RunEvaluationResponse.FromString(item.SerializeToString())
            else:
                await context.abort(item.code, item.details, item.trailing_metadata)


# The base servicers answer UNIMPLEMENTED for the methods not scripted here; the stubs mark them
# abstract, hence the ignores where the servicers are built.
class _Cluster(cluster_service_pb2_grpc.ClusterServiceServicer):
    def __init__(self, fake: FakeGateway) -> None:
        self.fake = fake

    async def GetQueueStats(
        self, request: cluster_service_pb2.GetQueueStatsRequest, context: Context
    ) -> cluster_service_pb2.GetQueueStatsResponse:
        await self.fake.answer("GetQueueStats", request, context)
        high = cluster_pb2.PriorityQueueStats(priority=evaluation_pb2.PRIORITY_HIGH, depth=3)
        stats = cluster_pb2.QueueStats(priorities=[high], running=1)
        return cluster_service_pb2.GetQueueStatsResponse(stats=stats)


class _Keys(api_key_service_pb2_grpc.ApiKeyServiceServicer):
    def __init__(self, fake: FakeGateway) -> None:
        self.fake = fake

    async def CreateApiKey(
        self, request: api_key_service_pb2.CreateApiKeyRequest, context: Context
    ) -> api_key_service_pb2.CreateApiKeyResponse:
        await self.fake.answer("CreateApiKey", request, context)
        key = api_key_pb2.ApiKey(id="key-1", tenant=request.tenant, role=request.role)
        return api_key_service_pb2.CreateApiKeyResponse(api_key=key, secret="s3cret")
