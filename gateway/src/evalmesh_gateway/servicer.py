"""Handlers of the public evalmesh.v1 services: authenticate, validate, delegate, translate.

Every handler starts by authenticating; the tenant passed upstream is the key's, never a request
field. Upstream gRPC errors are re-raised as the same domain errors by the shared interceptor, so
a foreign evaluation answers exactly like a missing one (storage scopes every read by tenant).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import grpc
import grpc.aio

from evalmesh.scheduler.v1 import scheduler_service_pb2, scheduler_service_pb2_grpc
from evalmesh.storage.v1 import storage_service_pb2, storage_service_pb2_grpc
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
from evalmesh_common import ResourceExhausted
from evalmesh_common.ids import new_evaluation_id
from evalmesh_gateway.auth import Authenticator
from evalmesh_gateway.metrics import TenantMetrics
from evalmesh_gateway.operations import activity_request, drain_request, purge_request
from evalmesh_gateway.position import estimate_start
from evalmesh_gateway.ratelimit import RateLimiter
from evalmesh_gateway.validation import (
    Bounds,
    validate_batch,
    validate_batch_size,
    validate_cancel,
    validate_create,
    validate_create_key,
    validate_id,
    validate_list,
    validate_list_keys,
    validate_page_size,
)
from evalmesh_gateway.watch import Watcher

__all__ = ["ApiKeyServicer", "ClusterServicer", "EvaluationServicer", "Upstreams"]

Context = grpc.aio.ServicerContext[Any, Any]
TIMEOUT = 10.0


class Upstreams:
    """The stubs of the services the gateway delegates to, plus its shared policies."""

    def __init__(
        self,
        storage: storage_service_pb2_grpc.StorageServiceAsyncStub,
        scheduler: scheduler_service_pb2_grpc.SchedulerServiceAsyncStub,
        bounds: Bounds,
        limiter: RateLimiter,
        auth: Authenticator,
        tenant_metrics: TenantMetrics | None = None,
    ) -> None:
        self.storage = storage
        self.scheduler = scheduler
        self.bounds = bounds
        self.limiter = limiter
        self.auth = auth
        self.tenant_metrics = tenant_metrics


class EvaluationServicer(evaluation_service_pb2_grpc.EvaluationServiceServicer):
    """evalmesh.v1.EvaluationService."""

    def __init__(self, upstreams: Upstreams, watcher: Watcher) -> None:
        self._up = upstreams
        self._watcher = watcher

    async def CreateEvaluation(
        self, request: evaluation_service_pb2.CreateEvaluationRequest, context: Context
    ) -> evaluation_service_pb2.CreateEvaluationResponse:
        principal = await self._up.auth.authenticate(context)
        # Before validation, so a flood of bad requests is throttled too.
        self._admit(principal.tenant)
        spec = validate_create(request, self._up.bounds)
        submit = scheduler_service_pb2.SubmitEvaluationRequest(
            tenant=principal.tenant, request_id=request.request_id, spec=spec
        )
        reply = await self._up.scheduler.SubmitEvaluation(submit, timeout=TIMEOUT)
        self._created(principal.tenant, int(reply.created))
        return evaluation_service_pb2.CreateEvaluationResponse(
            evaluation=_basic(reply.record.evaluation), created=reply.created
        )

    async def BatchCreateEvaluations(
        self, request: evaluation_service_pb2.BatchCreateEvaluationsRequest, context: Context
    ) -> evaluation_service_pb2.BatchCreateEvaluationsResponse:
        principal = await self._up.auth.authenticate(context)
        # The count first (cheap), so an absurd batch is refused without spending anything.
        count = validate_batch_size(request, self._up.bounds)
        self._admit(principal.tenant, cost=count**0.5)
        specs = validate_batch(request, self._up.bounds)
        batch = scheduler_service_pb2.BatchSubmitEvaluationsRequest(
            requests=[
                scheduler_service_pb2.SubmitEvaluationRequest(
                    tenant=principal.tenant, request_id=item.request_id, spec=spec
                )
                for item, spec in zip(request.requests, specs, strict=True)
            ]
        )
        reply = await self._up.scheduler.BatchSubmitEvaluations(batch, timeout=60)
        self._created(principal.tenant, sum(item.created for item in reply.responses))
        return evaluation_service_pb2.BatchCreateEvaluationsResponse(
            evaluations=[_basic(item.record.evaluation) for item in reply.responses]
        )

    def _admit(self, tenant: str, cost: float = 1.0) -> None:
        """Take from the tenant's rate limit, counting a refusal in the metrics."""
        try:
            self._up.limiter.acquire(tenant, cost)
        except ResourceExhausted:
            if self._up.tenant_metrics is not None:
                self._up.tenant_metrics.rate_limited(tenant)
            raise

    def _created(self, tenant: str, count: int) -> None:
        if self._up.tenant_metrics is not None:
            self._up.tenant_metrics.created(tenant, count)

    async def GetEvaluation(
        self, request: evaluation_service_pb2.GetEvaluationRequest, context: Context
    ) -> evaluation_service_pb2.GetEvaluationResponse:
        principal = await self._up.auth.authenticate(context)
        view = request.view or evaluation_pb2.EVALUATION_VIEW_FULL
        get = storage_service_pb2.GetEvaluationRequest(
            tenant=principal.tenant,
            id=validate_id(request.id),
            view=view,
            include_queue_position=True,
        )
        reply = await self._up.storage.GetEvaluation(get, timeout=TIMEOUT)
        evaluation = reply.record.evaluation
        if evaluation.state == evaluation_pb2.Evaluation.STATE_QUEUED:
            await estimate_start(self._up.scheduler, principal.tenant, evaluation, context)
        return evaluation_service_pb2.GetEvaluationResponse(evaluation=evaluation)

    async def ListEvaluations(
        self, request: evaluation_service_pb2.ListEvaluationsRequest, context: Context
    ) -> evaluation_service_pb2.ListEvaluationsResponse:
        principal = await self._up.auth.authenticate(context)
        listing = storage_service_pb2.ListEvaluationsRequest(
            tenant=principal.tenant,
            page_size=validate_list(request, self._up.bounds),
            page_token=request.page_token,
            states=request.states,
            priorities=request.priorities,
            labels=request.labels,
            create_time_after=request.create_time_after
            if request.HasField("create_time_after")
            else None,
            create_time_before=request.create_time_before
            if request.HasField("create_time_before")
            else None,
            view=request.view or evaluation_pb2.EVALUATION_VIEW_BASIC,
        )
        reply = await self._up.storage.ListEvaluations(listing, timeout=TIMEOUT)
        return evaluation_service_pb2.ListEvaluationsResponse(
            evaluations=[record.evaluation for record in reply.records],
            next_page_token=reply.next_page_token,
        )

    async def CancelEvaluation(
        self, request: evaluation_service_pb2.CancelEvaluationRequest, context: Context
    ) -> evaluation_service_pb2.CancelEvaluationResponse:
        principal = await self._up.auth.authenticate(context)
        validate_cancel(request)
        cancel = scheduler_service_pb2.CancelEvaluationRequest(
            tenant=principal.tenant, id=request.id, reason=request.reason
        )
        reply = await self._up.scheduler.CancelEvaluation(cancel, timeout=TIMEOUT)
        return evaluation_service_pb2.CancelEvaluationResponse(
            evaluation=_basic(reply.record.evaluation)
        )

    async def WatchEvaluation(
        self, request: evaluation_service_pb2.WatchEvaluationRequest, context: Context
    ) -> AsyncIterator[evaluation_service_pb2.WatchEvaluationResponse]:
        principal = await self._up.auth.authenticate(context)
        evaluation_id = validate_id(request.id)
        offsets = (max(0, request.stdout_offset), max(0, request.stderr_offset))
        async for event in self._watcher.watch(principal.tenant, evaluation_id, offsets):
            yield cast(evaluation_service_pb2.WatchEvaluationResponse, event)

    async def RunEvaluation(
        self, request: evaluation_service_pb2.RunEvaluationRequest, context: Context
    ) -> AsyncIterator[evaluation_service_pb2.RunEvaluationResponse]:
        principal = await self._up.auth.authenticate(context)
        self._admit(principal.tenant)
        spec = validate_create(request, self._up.bounds)
        # Its id is chosen here, so the watcher can subscribe to its events before it exists.
        new_id = new_evaluation_id()

        async def create() -> evaluation_pb2.Evaluation:
            submit = scheduler_service_pb2.SubmitEvaluationRequest(
                tenant=principal.tenant, request_id=request.request_id, spec=spec, id=new_id
            )
            reply = await self._up.scheduler.SubmitEvaluation(submit, timeout=TIMEOUT)
            self._created(principal.tenant, int(reply.created))
            return _basic(reply.record.evaluation)

        async for event in self._watcher.run(principal.tenant, new_id, create):
            yield cast(evaluation_service_pb2.RunEvaluationResponse, event)


class ClusterServicer(cluster_service_pb2_grpc.ClusterServiceServicer):
    """evalmesh.v1.ClusterService: cluster views for admins, runtimes for everyone."""

    def __init__(self, upstreams: Upstreams) -> None:
        self._up = upstreams

    async def GetQueueStats(
        self, request: cluster_service_pb2.GetQueueStatsRequest, context: Context
    ) -> cluster_service_pb2.GetQueueStatsResponse:
        (await self._up.auth.authenticate(context)).require_admin()
        reply = await self._up.scheduler.GetQueueStats(
            scheduler_service_pb2.GetQueueStatsRequest(), timeout=TIMEOUT
        )
        return cluster_service_pb2.GetQueueStatsResponse(stats=reply.stats)

    async def ListExecutors(
        self, request: cluster_service_pb2.ListExecutorsRequest, context: Context
    ) -> cluster_service_pb2.ListExecutorsResponse:
        (await self._up.auth.authenticate(context)).require_admin()
        executors = await self._executors()
        return cluster_service_pb2.ListExecutorsResponse(executors=executors)

    async def ListRuntimes(
        self, request: cluster_service_pb2.ListRuntimesRequest, context: Context
    ) -> cluster_service_pb2.ListRuntimesResponse:
        await self._up.auth.authenticate(context)
        reply = await self._up.scheduler.ListRuntimes(
            scheduler_service_pb2.ListRuntimesRequest(), timeout=TIMEOUT
        )
        offered = {runtime.name: runtime for runtime in reply.runtimes}
        # The runtimes the API accepts are listed even when no executor offers them now.
        runtimes = [
            offered.get(name) or cluster_pb2.Runtime(name=name, language="python")
            for name in sorted(set(offered) | set(self._up.bounds.runtimes))
        ]
        return cluster_service_pb2.ListRuntimesResponse(runtimes=runtimes)

    async def ListDeadLetters(
        self, request: cluster_service_pb2.ListDeadLettersRequest, context: Context
    ) -> cluster_service_pb2.ListDeadLettersResponse:
        (await self._up.auth.authenticate(context)).require_admin()
        listing = scheduler_service_pb2.ListDeadLettersRequest(
            page_size=validate_page_size(request.page_size, self._up.bounds),
            page_token=request.page_token,
        )
        reply = await self._up.scheduler.ListDeadLetters(listing, timeout=TIMEOUT)
        return cluster_service_pb2.ListDeadLettersResponse(
            dead_letters=reply.dead_letters, next_page_token=reply.next_page_token
        )

    async def RedriveDeadLetter(
        self, request: cluster_service_pb2.RedriveDeadLetterRequest, context: Context
    ) -> cluster_service_pb2.RedriveDeadLetterResponse:
        (await self._up.auth.authenticate(context)).require_admin()
        redrive = scheduler_service_pb2.RedriveDeadLetterRequest(sequence=request.sequence)
        reply = await self._up.scheduler.RedriveDeadLetter(redrive, timeout=TIMEOUT)
        return cluster_service_pb2.RedriveDeadLetterResponse(
            evaluation=_basic(reply.record.evaluation)
        )

    async def GetDeadLetter(
        self, request: cluster_service_pb2.GetDeadLetterRequest, context: Context
    ) -> cluster_service_pb2.GetDeadLetterResponse:
        (await self._up.auth.authenticate(context)).require_admin()
        read = scheduler_service_pb2.GetDeadLetterRequest(sequence=request.sequence)
        letter = (await self._up.scheduler.GetDeadLetter(read, timeout=TIMEOUT)).dead_letter
        return cluster_service_pb2.GetDeadLetterResponse(
            dead_letter=letter, evaluation=await self._any_tenants(letter.evaluation_id)
        )

    async def DrainExecutor(
        self, request: cluster_service_pb2.DrainExecutorRequest, context: Context
    ) -> cluster_service_pb2.DrainExecutorResponse:
        (await self._up.auth.authenticate(context)).require_admin()
        reply = await self._up.scheduler.DrainExecutor(drain_request(request), timeout=TIMEOUT)
        return cluster_service_pb2.DrainExecutorResponse(executor=reply.executor)

    async def PurgeEvaluations(
        self, request: cluster_service_pb2.PurgeEvaluationsRequest, context: Context
    ) -> cluster_service_pb2.PurgeEvaluationsResponse:
        (await self._up.auth.authenticate(context)).require_admin()
        purge = purge_request(request)
        reply = await self._up.scheduler.PurgeEvaluations(purge, timeout=TIMEOUT)
        return cluster_service_pb2.PurgeEvaluationsResponse(
            purged=reply.purged, end_time_before=purge.end_time_before, complete=reply.complete
        )

    async def GetQueueActivity(
        self, request: cluster_service_pb2.GetQueueActivityRequest, context: Context
    ) -> cluster_service_pb2.GetQueueActivityResponse:
        (await self._up.auth.authenticate(context)).require_admin()
        reply = await self._up.storage.GetActivity(activity_request(request), timeout=TIMEOUT)
        return cluster_service_pb2.GetQueueActivityResponse(activity=reply.activity)

    async def _any_tenants(self, evaluation_id: str) -> evaluation_pb2.Evaluation | None:
        """An evaluation of any tenant, BASIC view (admin calls only); None once purged."""
        get = storage_service_pb2.GetEvaluationRequest(
            id=evaluation_id, view=evaluation_pb2.EVALUATION_VIEW_BASIC
        )
        try:
            return (await self._up.storage.GetEvaluation(get, timeout=TIMEOUT)).record.evaluation
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
            return None

    async def _executors(self) -> list[cluster_pb2.Executor]:
        reply = await self._up.scheduler.ListExecutors(
            scheduler_service_pb2.ListExecutorsRequest(), timeout=TIMEOUT
        )
        return list(reply.executors)


class ApiKeyServicer(api_key_service_pb2_grpc.ApiKeyServiceServicer):
    """evalmesh.v1.ApiKeyService: key management, admins only."""

    def __init__(self, upstreams: Upstreams) -> None:
        self._up = upstreams

    async def CreateApiKey(
        self, request: api_key_service_pb2.CreateApiKeyRequest, context: Context
    ) -> api_key_service_pb2.CreateApiKeyResponse:
        (await self._up.auth.authenticate(context)).require_admin()
        validate_create_key(request)
        create = storage_service_pb2.CreateApiKeyRequest(
            tenant=request.tenant,
            role=request.role or api_key_pb2.ROLE_USER,
            display_name=request.display_name,
        )
        reply = await self._up.storage.CreateApiKey(create, timeout=TIMEOUT)
        return api_key_service_pb2.CreateApiKeyResponse(api_key=reply.api_key, secret=reply.secret)

    async def ListApiKeys(
        self, request: api_key_service_pb2.ListApiKeysRequest, context: Context
    ) -> api_key_service_pb2.ListApiKeysResponse:
        (await self._up.auth.authenticate(context)).require_admin()
        listing = storage_service_pb2.ListApiKeysRequest(
            page_size=validate_list_keys(request, self._up.bounds),
            page_token=request.page_token,
            tenant=request.tenant,
            include_revoked=request.include_revoked,
        )
        reply = await self._up.storage.ListApiKeys(listing, timeout=TIMEOUT)
        return api_key_service_pb2.ListApiKeysResponse(
            api_keys=reply.api_keys, next_page_token=reply.next_page_token
        )

    async def RevokeApiKey(
        self, request: api_key_service_pb2.RevokeApiKeyRequest, context: Context
    ) -> api_key_service_pb2.RevokeApiKeyResponse:
        (await self._up.auth.authenticate(context)).require_admin()
        revoke = storage_service_pb2.RevokeApiKeyRequest(id=validate_id(request.id))
        reply = await self._up.storage.RevokeApiKey(revoke, timeout=TIMEOUT)
        await self._up.auth.revoked(reply.api_key.id)
        return api_key_service_pb2.RevokeApiKeyResponse(api_key=reply.api_key)


def _basic(evaluation: evaluation_pb2.Evaluation) -> evaluation_pb2.Evaluation:
    """The BASIC view: no code, stdin or output bytes."""
    basic = evaluation_pb2.Evaluation()
    basic.CopyFrom(evaluation)
    basic.spec.ClearField("code")
    basic.spec.ClearField("stdin")
    basic.result.ClearField("stdout")
    basic.result.ClearField("stderr")
    return basic
