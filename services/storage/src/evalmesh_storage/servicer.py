"""``evalmesh.storage.v1.StorageService`` handlers: wire messages in, domain calls, wire out.

Nothing here decides anything. Domain errors propagate to the shared error interceptor, which
answers with their gRPC code and a ``google.rpc.Status`` carrying the stable reason.
"""

from __future__ import annotations

from typing import Any

import grpc.aio

from evalmesh.storage.v1 import storage_service_pb2 as pb
from evalmesh.storage.v1 import storage_service_pb2_grpc as pb_grpc
from evalmesh_storage import convert
from evalmesh_storage.domain import Priority, State, Stream, TenantShare, View
from evalmesh_storage.errors import invalid
from evalmesh_storage.evaluations import ListQuery
from evalmesh_storage.state_machine import Claim
from evalmesh_storage.storage import MAX_BATCH, Storage

__all__ = ["StorageServicer"]

Context = grpc.aio.ServicerContext[Any, Any]


class StorageServicer(pb_grpc.StorageServiceServicer):
    """Serves StorageService from a :class:`Storage`."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    async def CreateEvaluation(
        self, request: pb.CreateEvaluationRequest, context: Context
    ) -> pb.CreateEvaluationResponse:
        """Create or find one evaluation."""
        found, created = await self._storage.create_evaluation(convert.new_evaluation(request))
        return pb.CreateEvaluationResponse(record=convert.record(found), created=created)

    async def BatchCreateEvaluations(
        self, request: pb.BatchCreateEvaluationsRequest, context: Context
    ) -> pb.BatchCreateEvaluationsResponse:
        """Create or find many evaluations in one transaction."""
        if len(request.requests) > MAX_BATCH:
            raise invalid("requests", f"at most {MAX_BATCH} per batch")
        batch = [
            convert.new_evaluation(item, f"requests[{index}].")
            for index, item in enumerate(request.requests)
        ]
        results = await self._storage.batch_create_evaluations(batch)
        return pb.BatchCreateEvaluationsResponse(
            responses=[
                pb.CreateEvaluationResponse(record=convert.record(found), created=created)
                for found, created in results
            ]
        )

    async def GetEvaluation(
        self, request: pb.GetEvaluationRequest, context: Context
    ) -> pb.GetEvaluationResponse:
        """Read one evaluation (FULL unless asked otherwise)."""
        found = await self._storage.get_evaluation(
            request.id,
            request.tenant,
            convert.view(request.view, View.FULL),
            request.include_queue_position,
        )
        return pb.GetEvaluationResponse(record=convert.record(found))

    async def ListEvaluations(
        self, request: pb.ListEvaluationsRequest, context: Context
    ) -> pb.ListEvaluationsResponse:
        """Page a tenant's evaluations (BASIC unless asked otherwise)."""
        query = ListQuery(
            tenant=request.tenant,
            page_size=request.page_size,
            page_token=request.page_token,
            states=[
                convert.enum_value(State, s, f"states[{i}]") for i, s in enumerate(request.states)
            ],
            priorities=[
                convert.enum_value(Priority, p, f"priorities[{i}]")
                for i, p in enumerate(request.priorities)
            ],
            labels=dict(request.labels),
            create_time_after=_optional_time(request, "create_time_after"),
            create_time_before=_optional_time(request, "create_time_before"),
            view=convert.view(request.view, View.BASIC),
        )
        page = await self._storage.list_evaluations(query)
        return pb.ListEvaluationsResponse(
            records=[convert.record(e) for e in page.items], next_page_token=page.next_page_token
        )

    async def ClaimEvaluation(
        self, request: pb.ClaimEvaluationRequest, context: Context
    ) -> pb.ClaimEvaluationResponse:
        """QUEUED -> RUNNING for the calling executor."""
        claim = Claim(
            executor_id=request.executor_id,
            lease_us=convert.us_from_duration(request.lease_duration),
            runtime_digest=request.runtime_digest,
            applied_limits=(
                convert.applied_limits(request.applied_limits)
                if request.HasField("applied_limits")
                else None
            ),
            tenant_share=(
                TenantShare(
                    max_running=request.tenant_share.max_running,
                    fair_running=request.tenant_share.fair_running,
                    ending=tuple(request.tenant_share.ending),
                )
                if request.HasField("tenant_share")
                else None
            ),
        )
        found = await self._storage.claim(request.id, claim)
        return pb.ClaimEvaluationResponse(record=convert.record(found))

    async def RenewLease(
        self, request: pb.RenewLeaseRequest, context: Context
    ) -> pb.RenewLeaseResponse:
        """Extend the running attempt's lease."""
        expires, cancel_requested = await self._storage.renew_lease(
            request.id, request.attempt, convert.us_from_duration(request.lease_duration)
        )
        return pb.RenewLeaseResponse(
            lease_expire_time=convert.timestamp(expires), cancel_requested=cancel_requested
        )

    async def AppendOutput(
        self, request: pb.AppendOutputRequest, context: Context
    ) -> pb.AppendOutputResponse:
        """Store output chunks of the running attempt."""
        chunks = [convert.chunk(c, f"chunks[{i}]") for i, c in enumerate(request.chunks)]
        stored = await self._storage.append_output(request.id, request.attempt, chunks)
        return pb.AppendOutputResponse(progress=convert.progress(stored))

    async def ReadOutput(
        self, request: pb.ReadOutputRequest, context: Context
    ) -> pb.ReadOutputResponse:
        """Read stored output from a byte offset."""
        stream = convert.enum_value(Stream, request.stream, "stream")
        chunks, stored = await self._storage.read_output(
            request.tenant, request.id, stream, request.offset, request.max_bytes
        )
        return pb.ReadOutputResponse(
            chunks=[convert.chunk_message(c) for c in chunks], progress=convert.progress(stored)
        )

    async def CompleteEvaluation(
        self, request: pb.CompleteEvaluationRequest, context: Context
    ) -> pb.CompleteEvaluationResponse:
        """Record the running attempt's terminal result."""
        state = convert.enum_value(State, request.state, "state")
        chunks = [convert.chunk(c, f"chunks[{i}]") for i, c in enumerate(request.chunks)]
        found = await self._storage.complete(
            request.id,
            request.attempt,
            state,
            convert.result(request.result),
            chunks,
            convert.run_timings(request),
        )
        return pb.CompleteEvaluationResponse(record=convert.record(found))

    async def CancelEvaluation(
        self, request: pb.CancelEvaluationRequest, context: Context
    ) -> pb.CancelEvaluationResponse:
        """Cancel in any state."""
        found, before = await self._storage.cancel(request.tenant, request.id, request.reason)
        return pb.CancelEvaluationResponse(
            record=convert.record(found), previous_state=convert.state_message(before)
        )

    async def RequeueEvaluation(
        self, request: pb.RequeueEvaluationRequest, context: Context
    ) -> pb.RequeueEvaluationResponse:
        """Return an expired attempt's evaluation to the queue."""
        found = await self._storage.requeue(request.id, request.attempt, request.reason)
        return pb.RequeueEvaluationResponse(record=convert.record(found))

    async def RecordPublications(
        self, request: pb.RecordPublicationsRequest, context: Context
    ) -> pb.RecordPublicationsResponse:
        """Note published jobs."""
        recorded = await self._storage.record_publications(list(request.ids))
        return pb.RecordPublicationsResponse(recorded=recorded)

    async def ListUnpublished(
        self, request: pb.ListUnpublishedRequest, context: Context
    ) -> pb.ListUnpublishedResponse:
        """QUEUED evaluations whose jobs need publishing."""
        found = await self._storage.list_unpublished(
            _optional_time(request, "published_before"), request.limit
        )
        return pb.ListUnpublishedResponse(records=[convert.record(e) for e in found])

    async def ListExpiredLeases(
        self, request: pb.ListExpiredLeasesRequest, context: Context
    ) -> pb.ListExpiredLeasesResponse:
        """RUNNING evaluations whose lease ended."""
        found = await self._storage.list_expired_leases(request.limit)
        return pb.ListExpiredLeasesResponse(records=[convert.record(e) for e in found])

    async def ListQueued(
        self, request: pb.ListQueuedRequest, context: Context
    ) -> pb.ListQueuedResponse:
        """One page of published QUEUED evaluations, in queue order."""
        before = _optional_time(request, "published_before")
        if before is None:
            raise invalid("published_before", "is required")
        found, token = await self._storage.list_queued(
            before, request.page_size, request.page_token
        )
        return pb.ListQueuedResponse(
            records=[convert.record(e) for e in found], next_page_token=token
        )

    async def ListLeases(
        self, request: pb.ListLeasesRequest, context: Context
    ) -> pb.ListLeasesResponse:
        """The RUNNING evaluations one executor holds."""
        found = await self._storage.list_leases(request.executor_id, request.limit)
        return pb.ListLeasesResponse(records=[convert.record(e) for e in found])

    async def GetStats(self, request: pb.GetStatsRequest, context: Context) -> pb.GetStatsResponse:
        """Counts per state and priority."""
        return convert.stats(await self._storage.stats(request.tenant))

    async def PurgeEvaluations(
        self, request: pb.PurgeEvaluationsRequest, context: Context
    ) -> pb.PurgeEvaluationsResponse:
        """Delete old terminal evaluations with their output."""
        before = _optional_time(request, "end_time_before")
        if before is None:
            raise invalid("end_time_before", "is required")
        purged = await self._storage.purge(before, request.limit)
        return pb.PurgeEvaluationsResponse(purged=purged)

    async def GetActivity(
        self, request: pb.GetActivityRequest, context: Context
    ) -> pb.GetActivityResponse:
        """Throughput and queue waits over a recent window."""
        window = convert.us_from_duration(request.window) if request.HasField("window") else None
        found = await self._storage.activity(window, request.buckets)
        return pb.GetActivityResponse(activity=convert.activity(found))

    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: Context
    ) -> pb.CreateApiKeyResponse:
        """Create a key and return its secret once."""
        created = await self._storage.create_api_key(
            request.tenant, convert.role(request.role), request.display_name
        )
        return pb.CreateApiKeyResponse(api_key=convert.api_key(created.key), secret=created.secret)

    async def ListApiKeys(
        self, request: pb.ListApiKeysRequest, context: Context
    ) -> pb.ListApiKeysResponse:
        """Page through keys."""
        page = await self._storage.list_api_keys(
            request.tenant, request.include_revoked, request.page_size, request.page_token
        )
        return pb.ListApiKeysResponse(
            api_keys=[convert.api_key(k) for k in page.items], next_page_token=page.next_page_token
        )

    async def RevokeApiKey(
        self, request: pb.RevokeApiKeyRequest, context: Context
    ) -> pb.RevokeApiKeyResponse:
        """Revoke a key (idempotent)."""
        return pb.RevokeApiKeyResponse(
            api_key=convert.api_key(await self._storage.revoke_api_key(request.id))
        )

    async def AuthenticateApiKey(
        self, request: pb.AuthenticateApiKeyRequest, context: Context
    ) -> pb.AuthenticateApiKeyResponse:
        """Look a presented secret up."""
        found = await self._storage.authenticate_api_key(request.secret)
        return pb.AuthenticateApiKeyResponse(api_key=convert.api_key(found))


def _optional_time(message: Any, field: str) -> int | None:
    return convert.us_from_timestamp(getattr(message, field)) if message.HasField(field) else None
