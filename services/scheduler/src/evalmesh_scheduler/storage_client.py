"""The storage service as the scheduler's domain code sees it: typed calls, domain errors.

Each method is one RPC with the configured deadline; a failed call is re-raised as the
:class:`~evalmesh_common.DomainError` the storage service meant (``error_from_rpc``), so domain
modules branch on reasons such as ``ALREADY_TERMINAL`` and never import grpc.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TypeVar

import grpc
import grpc.aio
from google.protobuf import duration_pb2, timestamp_pb2

from evalmesh.storage.v1 import record_pb2, storage_service_pb2, storage_service_pb2_grpc
from evalmesh.v1 import evaluation_pb2
from evalmesh_common import Unavailable
from evalmesh_common.server import error_from_rpc

__all__ = ["Created", "StorageClient"]

R = TypeVar("R")
Record = record_pb2.EvaluationRecord
Created = tuple[Record, bool]
_pb = storage_service_pb2


class StorageClient:
    """Calls to ``evalmesh.storage.v1.StorageService`` over a channel the app owns."""

    def __init__(self, channel: grpc.aio.Channel, timeout: float) -> None:
        self._stub = storage_service_pb2_grpc.StorageServiceStub(channel)
        self.timeout = timeout

    async def create(
        self, tenant: str, request_id: str, spec: evaluation_pb2.EvaluationSpec, new_id: str = ""
    ) -> Created:
        """Create (or find) one QUEUED evaluation; returns it and whether this call created it.
        ``new_id``, if given, is the id a new one gets."""
        request = _pb.CreateEvaluationRequest(
            tenant=tenant, request_id=request_id, spec=spec, id=new_id
        )
        response = await self._call(self._stub.CreateEvaluation, request)
        return response.record, response.created

    async def batch_create(self, requests: Sequence[_pb.CreateEvaluationRequest]) -> list[Created]:
        """Create many evaluations in one transaction (all or none), results in order."""
        request = _pb.BatchCreateEvaluationsRequest(requests=requests)
        response = await self._call(self._stub.BatchCreateEvaluations, request)
        return [(item.record, item.created) for item in response.responses]

    async def get(
        self,
        evaluation_id: str,
        tenant: str = "",
        *,
        full: bool = False,
        queue_position: bool = False,
    ) -> Record:
        """Read one evaluation; tenant empty reads across tenants."""
        view = evaluation_pb2.EVALUATION_VIEW_FULL if full else evaluation_pb2.EVALUATION_VIEW_BASIC
        request = _pb.GetEvaluationRequest(
            tenant=tenant, id=evaluation_id, view=view, include_queue_position=queue_position
        )
        return (await self._call(self._stub.GetEvaluation, request)).record

    async def cancel(
        self, tenant: str, evaluation_id: str, reason: str
    ) -> tuple[Record, evaluation_pb2.Evaluation.State.ValueType]:
        """Cancel; returns the evaluation afterwards and its state before."""
        request = _pb.CancelEvaluationRequest(tenant=tenant, id=evaluation_id, reason=reason)
        response = await self._call(self._stub.CancelEvaluation, request)
        return response.record, response.previous_state

    async def claim(self, evaluation_id: str, executor_id: str, lease: float) -> Record:
        """Claim a QUEUED evaluation (QUEUED -> RUNNING, attempt + 1)."""
        request = _pb.ClaimEvaluationRequest(
            id=evaluation_id, executor_id=executor_id, lease_duration=_duration(lease)
        )
        return (await self._call(self._stub.ClaimEvaluation, request)).record

    async def complete(
        self,
        evaluation_id: str,
        attempt: int,
        state: evaluation_pb2.Evaluation.State.ValueType,
        result: evaluation_pb2.EvaluationResult,
    ) -> Record:
        """Record the terminal result of ``attempt``."""
        request = _pb.CompleteEvaluationRequest(
            id=evaluation_id, attempt=attempt, state=state, result=result
        )
        return (await self._call(self._stub.CompleteEvaluation, request)).record

    async def requeue(self, evaluation_id: str, attempt: int, reason: str) -> Record:
        """Return a RUNNING evaluation whose lease expired to QUEUED."""
        request = _pb.RequeueEvaluationRequest(id=evaluation_id, attempt=attempt, reason=reason)
        return (await self._call(self._stub.RequeueEvaluation, request)).record

    async def record_publications(self, ids: Sequence[str]) -> int:
        """Note that these evaluations' jobs were published."""
        if not ids:
            return 0
        request = _pb.RecordPublicationsRequest(ids=ids)
        return (await self._call(self._stub.RecordPublications, request)).recorded

    async def list_unpublished(self, published_before: datetime, limit: int) -> list[Record]:
        """QUEUED evaluations never published, or last published before a time; oldest first."""
        stamp = timestamp_pb2.Timestamp()
        stamp.FromDatetime(published_before)
        request = _pb.ListUnpublishedRequest(published_before=stamp, limit=limit)
        return list((await self._call(self._stub.ListUnpublished, request)).records)

    async def list_queued(
        self, published_before: datetime, page_size: int, page_token: str
    ) -> tuple[list[Record], str]:
        """One page of QUEUED evaluations published before a time, in queue order, and the
        token of the next page ("" at the end of the queue)."""
        stamp = timestamp_pb2.Timestamp()
        stamp.FromDatetime(published_before)
        request = _pb.ListQueuedRequest(
            published_before=stamp, page_size=page_size, page_token=page_token
        )
        response = await self._call(self._stub.ListQueued, request)
        return list(response.records), response.next_page_token

    async def list_expired_leases(self, limit: int) -> list[Record]:
        """RUNNING evaluations whose lease ended on the database clock."""
        request = _pb.ListExpiredLeasesRequest(limit=limit)
        return list((await self._call(self._stub.ListExpiredLeases, request)).records)

    async def stats(self, tenant: str = "") -> _pb.GetStatsResponse:
        """Counts per state, queue per priority with the oldest wait, recent completions."""
        return await self._call(self._stub.GetStats, _pb.GetStatsRequest(tenant=tenant))

    async def purge(self, end_time_before: datetime, limit: int) -> int:
        """Delete up to ``limit`` terminal evaluations that ended before a time; how many."""
        request = _pb.PurgeEvaluationsRequest(
            end_time_before=_timestamp(end_time_before), limit=limit
        )
        return (await self._call(self._stub.PurgeEvaluations, request)).purged

    async def _call(self, method: Callable[..., Awaitable[R]], request: object) -> R:
        try:
            return await method(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from exc
        except grpc.aio.UsageError as exc:  # the channel was closed under us (shutdown)
            raise Unavailable("the storage channel is closed") from exc


def _duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromNanoseconds(round(seconds * 1e9))
    return value


def _timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp
