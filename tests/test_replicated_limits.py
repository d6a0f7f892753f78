"""Two gateways behind one Envoy edge: a tenant's rate limit and watch cap hold over both, so a
tenant over its limit is refused whichever gateway it reaches, directly or through the edge."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator

import grpc
import grpc.aio
import pytest

from evalmesh.v1 import (
    api_key_service_pb2,
    api_key_service_pb2_grpc,
    evaluation_pb2,
    evaluation_service_pb2,
    evaluation_service_pb2_grpc,
)
from evalmesh_testing.replicated import ReplicatedMesh

ES = evaluation_service_pb2
RATE = 2.0
BURST = 10
MAX_WATCHES = 3
# What a gateway may admit before it hears of the other's admissions (one report interval of
# 50 ms, plus delivery), beyond one limit for the two together.
SLACK = 3


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplicatedMesh]:
    """NATS, storage on SQLite, a scheduler, no executor (evaluations stay queued, so watches
    stay open), two gateways and the edge over them."""
    directory = tmp_path_factory.mktemp("two-gateways")
    env = {
        "EVALMESH_TENANT_RATE": str(RATE),
        "EVALMESH_TENANT_BURST": str(BURST),
        "EVALMESH_TENANT_MAX_WATCHES": str(MAX_WATCHES),
    }
    database = f"sqlite+aiosqlite:///{directory / 'storage.db'}"
    replicas = {"gateway": 2, "executor-pool": 0}
    with ReplicatedMesh(directory, database, replicas, env, nats_size=1) as running:
        yield running


class Tenant:
    """A fresh tenant's key, and stubs for each gateway and for the edge."""

    def __init__(self, mesh: ReplicatedMesh, key: str) -> None:
        self.metadata = (("authorization", f"Bearer {key}"),)
        addresses = [member.address for member in mesh.members["gateway"]]
        self.channels = [grpc.aio.insecure_channel(a) for a in [*addresses, mesh.edge_address]]
        stubs = [evaluation_service_pb2_grpc.EvaluationServiceStub(c) for c in self.channels]
        self.gateways, self.edge = stubs[:-1], stubs[-1]

    async def create(self, stub: evaluation_service_pb2_grpc.EvaluationServiceAsyncStub) -> str:
        """Create one evaluation: its id, or the code of the refusal."""
        spec = evaluation_pb2.EvaluationSpec(code="print(1)")
        request = ES.CreateEvaluationRequest(request_id=str(uuid.uuid4()), spec=spec)
        try:
            reply = await stub.CreateEvaluation(request, metadata=self.metadata, timeout=10)
        except grpc.aio.AioRpcError as error:
            return error.code().name
        return str(reply.evaluation.id)

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close(None)


@pytest.fixture
async def tenant(mesh: ReplicatedMesh) -> AsyncIterator[Tenant]:
    async with grpc.aio.insecure_channel(mesh.members["gateway"][0].address) as channel:
        keys = api_key_service_pb2_grpc.ApiKeyServiceStub(channel)
        request = api_key_service_pb2.CreateApiKeyRequest(tenant=f"t-{uuid.uuid4().hex[:8]}")
        admin = (("authorization", f"Bearer {mesh.admin_api_key}"),)
        reply = await keys.CreateApiKey(request, metadata=admin, timeout=10)
    opened = Tenant(mesh, reply.secret)
    yield opened
    await opened.close()


def _rate_limited(metrics_url: str) -> float:
    with urllib.request.urlopen(metrics_url, timeout=5) as reply:
        text = reply.read().decode()
    found = re.findall(r"^evalmesh_gateway_tenant_rate_limited_total\{[^}]*\} (\S+)$", text, re.M)
    return sum(float(value) for value in found)


async def test_a_tenant_over_its_limit_at_one_gateway_is_refused_at_the_other(
    tenant: Tenant,
) -> None:
    first, second = tenant.gateways
    answers = [await tenant.create(first) for _ in range(BURST + 5)]
    assert answers.count("RESOURCE_EXHAUSTED") >= 5 - 1  # a token may refill meanwhile
    await asyncio.sleep(0.2)  # a few report intervals
    assert await tenant.create(second) == "RESOURCE_EXHAUSTED"


async def test_through_the_edge_two_gateways_admit_one_limit_and_both_refuse(
    mesh: ReplicatedMesh, tenant: Tenant
) -> None:
    refused_before = [_rate_limited(m.metrics_url) for m in mesh.members["gateway"]]
    start = time.monotonic()
    answers: list[str] = []
    for _ in range(20):  # 4 s of 15 calls a second, 5 in flight at a time
        answers += await asyncio.gather(*(tenant.create(tenant.edge) for _ in range(5)))
        await asyncio.sleep(0.2)
    elapsed = time.monotonic() - start
    accepted = sum(1 for answer in answers if answer not in {"RESOURCE_EXHAUSTED"})
    assert set(answers) - {"RESOURCE_EXHAUSTED"}, "nothing was accepted"
    assert accepted <= BURST + RATE * elapsed + SLACK, (accepted, elapsed)
    refused = [
        _rate_limited(m.metrics_url) - before
        for m, before in zip(mesh.members["gateway"], refused_before, strict=True)
    ]
    assert all(count > 0 for count in refused), refused


async def test_watches_open_at_one_gateway_count_toward_the_cap_at_the_other(
    tenant: Tenant,
) -> None:
    first, second = tenant.gateways
    ids = [await tenant.create(first) for _ in range(MAX_WATCHES + 1)]
    streams = []
    for evaluation_id in ids[:MAX_WATCHES]:
        stream = first.WatchEvaluation(
            ES.WatchEvaluationRequest(id=evaluation_id), metadata=tenant.metadata
        )
        await stream.read()  # the snapshot: the watch is open and counted
        streams.append(stream)
    await asyncio.sleep(0.2)
    refused = second.WatchEvaluation(
        ES.WatchEvaluationRequest(id=ids[-1]), metadata=tenant.metadata
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await refused.read()
    assert raised.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    streams.pop().cancel()
    await asyncio.sleep(0.3)
    allowed = second.WatchEvaluation(
        ES.WatchEvaluationRequest(id=ids[-1]), metadata=tenant.metadata
    )
    snapshot = await allowed.read()
    assert isinstance(snapshot, ES.WatchEvaluationResponse)
    assert snapshot.evaluation.id == ids[-1]
    allowed.cancel()
    for stream in streams:
        stream.cancel()
