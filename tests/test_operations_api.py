"""The operators' part of ClusterService through the real gateway: admin only, activity from
storage, and the gateway's per-tenant metrics."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import duration_pb2

from evalmesh.v1 import (
    api_key_pb2,
    api_key_service_pb2,
    api_key_service_pb2_grpc,
    cluster_service_pb2,
    cluster_service_pb2_grpc,
    evaluation_pb2,
    evaluation_service_pb2,
    evaluation_service_pb2_grpc,
)
from evalmesh_common.server.metrics import scrape
from evalmesh_deploy.local.mesh import MeshEndpoints

CS = cluster_service_pb2


def _auth(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


@pytest.fixture(scope="module")
def channel(mesh: MeshEndpoints) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(mesh.services["gateway"]) as opened:
        yield opened


@pytest.fixture(scope="module")
def user(channel: grpc.Channel, mesh: MeshEndpoints) -> tuple[str, str]:
    tenant = f"ops-{uuid.uuid4().hex[:6]}"
    request = api_key_service_pb2.CreateApiKeyRequest(tenant=tenant, role=api_key_pb2.ROLE_USER)
    keys = api_key_service_pb2_grpc.ApiKeyServiceStub(channel)
    reply = keys.CreateApiKey(request, metadata=_auth(mesh.admin_api_key), timeout=10)
    return tenant, reply.secret


@pytest.mark.parametrize(
    ("method", "request_message"),
    [
        ("GetDeadLetter", CS.GetDeadLetterRequest(sequence=1)),
        ("DrainExecutor", CS.DrainExecutorRequest(id="executor-pool-1")),
        ("PurgeEvaluations", CS.PurgeEvaluationsRequest(older_than=duration_pb2.Duration())),
        ("GetQueueActivity", CS.GetQueueActivityRequest()),
    ],
)
def test_operator_calls_refuse_a_user_key_and_change_nothing(
    channel: grpc.Channel,
    user: tuple[str, str],
    method: str,
    request_message: object,
) -> None:
    call = getattr(cluster_service_pb2_grpc.ClusterServiceStub(channel), method)
    with pytest.raises(grpc.RpcError) as refused:
        call(request_message, metadata=_auth(user[1]), timeout=10)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_queue_activity_covers_every_tenants_work_over_the_last_hour(
    channel: grpc.Channel, user: tuple[str, str], mesh: MeshEndpoints
) -> None:
    evaluations = evaluation_service_pb2_grpc.EvaluationServiceStub(channel)
    cluster = cluster_service_pb2_grpc.ClusterServiceStub(channel)
    request = evaluation_service_pb2.CreateEvaluationRequest(
        request_id=uuid.uuid4().hex, spec=evaluation_pb2.EvaluationSpec(code="print('seen')")
    )
    created = evaluations.CreateEvaluation(request, metadata=_auth(user[1]), timeout=10)
    deadline = time.monotonic() + 60
    get = evaluation_service_pb2.GetEvaluationRequest(id=created.evaluation.id)
    while evaluations.GetEvaluation(get, metadata=_auth(user[1]), timeout=10).evaluation.state in (
        evaluation_pb2.Evaluation.STATE_QUEUED,
        evaluation_pb2.Evaluation.STATE_RUNNING,
    ):
        assert time.monotonic() < deadline
        time.sleep(0.1)

    reply = cluster.GetQueueActivity(
        CS.GetQueueActivityRequest(), metadata=_auth(mesh.admin_api_key), timeout=10
    )
    activity = reply.activity  # the admin sees the user's tenant's run too
    assert len(activity.buckets) == 60
    assert activity.bucket_width.seconds == 60
    assert activity.started >= 1
    assert activity.completed >= 1
    assert activity.wait.count >= 1
    assert activity.wait.p50.ToTimedelta() <= activity.wait.max.ToTimedelta()
    assert activity.buckets[-1].started >= 1

    with pytest.raises(grpc.RpcError) as bad:
        cluster.GetQueueActivity(
            CS.GetQueueActivityRequest(window=duration_pb2.Duration(seconds=10)),
            metadata=_auth(mesh.admin_api_key),
            timeout=10,
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _created_total(address: str) -> float:
    prefix = "evalmesh_gateway_tenant_evaluations_created_total{"
    return sum(value for name, value in scrape(address).items() if name.startswith(prefix))


def test_the_gateway_counts_created_evaluations_per_tenant(
    channel: grpc.Channel, user: tuple[str, str], mesh: MeshEndpoints
) -> None:
    evaluations = evaluation_service_pb2_grpc.EvaluationServiceStub(channel)
    address = mesh.metrics["gateway"].split("/")[2]
    before = _created_total(address)
    request_id = uuid.uuid4().hex
    for _ in range(2):  # a repeated request_id creates nothing the second time
        request = evaluation_service_pb2.CreateEvaluationRequest(
            request_id=request_id, spec=evaluation_pb2.EvaluationSpec(code="print(1)")
        )
        evaluations.CreateEvaluation(request, metadata=_auth(user[1]), timeout=10)
    # Counted under the tenant's own name while it is heavy, else under "other" (bounded).
    assert _created_total(address) == before + 1
    tenants = {
        name.split('tenant="')[1].rstrip('"}')
        for name in scrape(address)
        if name.startswith("evalmesh_gateway_tenant_evaluations_created_total{")
    }
    assert tenants
    assert len(tenants) <= 51
