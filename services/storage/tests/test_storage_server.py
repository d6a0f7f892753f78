"""The real storage server over gRPC: translation, error details, health, reflection, process."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from sqlalchemy.engine import Engine

from evalmesh.storage.v1 import storage_service_pb2 as pb
from evalmesh.storage.v1 import storage_service_pb2_grpc as pb_grpc
from evalmesh.v1 import api_key_pb2, evaluation_pb2
from evalmesh_common.config import Seconds
from evalmesh_common.server import ServiceApp
from evalmesh_common.server.config import ServerConfig
from evalmesh_common.server.health_client import wait_for_serving
from evalmesh_common.server.status import error_from_rpc
from evalmesh_storage.app import SERVICE_NAME, build_app
from evalmesh_storage.config import StorageConfig
from evalmesh_testing.servers import StorageProcess

State = evaluation_pb2.Evaluation.State
STDOUT = evaluation_pb2.OUTPUT_STREAM_STDOUT


@pytest.fixture
async def server(engine: Engine, database_url: str) -> AsyncIterator[ServiceApp]:
    """The storage app on 127.0.0.1:0 over the test database (emptied by ``engine``)."""
    config = StorageConfig(
        server=ServerConfig(listen_address="127.0.0.1:0", probe_interval=Seconds(0.05)),
        database_url=database_url,
    )
    app = await build_app(config)
    await app.start()
    await wait_for_serving(app.address, timeout=10)
    try:
        yield app
    finally:
        await app.shutdown()


@pytest.fixture
async def stub(server: ServiceApp) -> AsyncIterator[pb_grpc.StorageServiceAsyncStub]:
    async with grpc.aio.insecure_channel(server.address) as channel:
        yield pb_grpc.StorageServiceStub(channel)


def duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromMicroseconds(round(seconds * 1_000_000))
    return value


def create(request_id: str, code: str = "print(1)", **spec: object) -> pb.CreateEvaluationRequest:
    return pb.CreateEvaluationRequest(
        tenant="acme",
        request_id=request_id,
        spec=evaluation_pb2.EvaluationSpec(code=code, **spec),  # type: ignore[arg-type]
    )


async def refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call  # type: ignore[misc]
    return error.value


async def test_an_evaluation_runs_its_whole_life_over_grpc(
    stub: pb_grpc.StorageServiceAsyncStub,
) -> None:
    labels = {"team": "ml"}
    created = await stub.CreateEvaluation(create("life", stdin=b"\x00\xff", labels=labels))
    assert created.created
    record = created.record
    assert record.tenant == "acme"
    assert record.evaluation.state == State.STATE_QUEUED
    assert record.evaluation.spec.priority == evaluation_pb2.PRIORITY_NORMAL
    evaluation_id = record.evaluation.id
    claimed = await stub.ClaimEvaluation(
        pb.ClaimEvaluationRequest(
            id=evaluation_id,
            executor_id="executor-1",
            lease_duration=duration(30),
            runtime_digest="sha256:abc",
            applied_limits=evaluation_pb2.AppliedLimits(
                max_output_bytes=5, wall_timeout=duration(30)
            ),
        )
    )
    assert claimed.record.evaluation.attempt == 1
    assert claimed.record.evaluation.spec.stdin == b"\x00\xff"
    assert claimed.record.HasField("lease_expire_time")
    chunks = [
        evaluation_pb2.OutputChunk(stream=STDOUT, sequence=1, offset=3, data=b"\x00\xfe\xff"),
        evaluation_pb2.OutputChunk(stream=STDOUT, sequence=0, offset=0, data=b"ab\xc3"),
    ]
    appended = await stub.AppendOutput(
        pb.AppendOutputRequest(id=evaluation_id, attempt=1, chunks=chunks)
    )
    assert appended.progress.stdout_bytes == 5
    assert appended.progress.stdout_truncated
    read = await stub.ReadOutput(
        pb.ReadOutputRequest(tenant="acme", id=evaluation_id, stream=STDOUT, offset=1)
    )
    assert b"".join(c.data for c in read.chunks) == b"b\xc3\x00\xfe"
    renewed = await stub.RenewLease(
        pb.RenewLeaseRequest(id=evaluation_id, attempt=1, lease_duration=duration(60))
    )
    assert not renewed.cancel_requested
    done = await stub.CompleteEvaluation(
        pb.CompleteEvaluationRequest(
            id=evaluation_id,
            attempt=1,
            state=State.STATE_OUTPUT_LIMIT_EXCEEDED,
            result=evaluation_pb2.EvaluationResult(
                cause=evaluation_pb2.TERMINATION_CAUSE_OUTPUT_LIMIT,
                fault=evaluation_pb2.FAULT_USER,
                signal=9,
                wall_time=duration(1.5),
            ),
        )
    )
    assert done.record.evaluation.state == State.STATE_OUTPUT_LIMIT_EXCEEDED
    full = await stub.GetEvaluation(pb.GetEvaluationRequest(tenant="acme", id=evaluation_id))
    result = full.record.evaluation.result
    assert result.stdout == b"ab\xc3\x00\xfe"
    assert result.stdout_truncated
    assert result.HasField("signal")
    assert not result.HasField("exit_code")
    assert result.wall_time.ToMicroseconds() == 1_500_000
    assert full.record.evaluation.spec.labels == labels
    basic = await stub.GetEvaluation(
        pb.GetEvaluationRequest(
            tenant="acme", id=evaluation_id, view=evaluation_pb2.EVALUATION_VIEW_BASIC
        )
    )
    assert basic.record.evaluation.result.stdout == b""
    assert basic.record.evaluation.result.stdout_bytes == 5
    assert basic.record.evaluation.spec.code == ""


async def test_errors_carry_their_grpc_code_and_stable_reason(
    stub: pb_grpc.StorageServiceAsyncStub,
) -> None:
    created = await stub.CreateEvaluation(create("reuse"))
    reused = await refused(stub.CreateEvaluation(create("reuse", code="print(2)")))
    assert reused.code() is grpc.StatusCode.ALREADY_EXISTS
    assert error_from_rpc(reused).reason == "REQUEST_ID_REUSED"
    missing = await refused(
        stub.GetEvaluation(
            pb.GetEvaluationRequest(tenant="globex", id=created.record.evaluation.id)
        )
    )
    assert missing.code() is grpc.StatusCode.NOT_FOUND
    stale = await refused(
        stub.RenewLease(
            pb.RenewLeaseRequest(
                id=created.record.evaluation.id, attempt=3, lease_duration=duration(1)
            )
        )
    )
    assert stale.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_from_rpc(stale).reason == "STALE_ATTEMPT"
    bad_enum = await refused(stub.CreateEvaluation(create("enum", priority=999)))
    assert bad_enum.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in error_from_rpc(bad_enum).violations] == ["spec.priority"]  # type: ignore[attr-defined]
    token = await refused(
        stub.ListEvaluations(pb.ListEvaluationsRequest(tenant="acme", page_token="forged.token"))
    )
    assert error_from_rpc(token).reason == "INVALID_PAGE_TOKEN"
    no_spec = await refused(
        stub.CreateEvaluation(pb.CreateEvaluationRequest(tenant="acme", request_id="x"))
    )
    assert no_spec.code() is grpc.StatusCode.INVALID_ARGUMENT
    nul = await refused(stub.GetEvaluation(pb.GetEvaluationRequest(tenant="ac\x00me", id="ev\x00")))
    assert nul.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)
    unauthenticated = await refused(
        stub.AuthenticateApiKey(pb.AuthenticateApiKeyRequest(secret="em_nope"))
    )
    assert unauthenticated.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_listing_batches_stats_publications_and_purge_over_grpc(
    stub: pb_grpc.StorageServiceAsyncStub,
) -> None:
    batch = await stub.BatchCreateEvaluations(
        pb.BatchCreateEvaluationsRequest(requests=[create(f"b{i}") for i in range(5)])
    )
    ids = [r.record.evaluation.id for r in batch.responses]
    page = await stub.ListEvaluations(pb.ListEvaluationsRequest(tenant="acme", page_size=3))
    rest = await stub.ListEvaluations(
        pb.ListEvaluationsRequest(tenant="acme", page_size=3, page_token=page.next_page_token)
    )
    assert [r.evaluation.id for r in [*page.records, *rest.records]] == ids[::-1]
    assert not rest.next_page_token
    unpublished = await stub.ListUnpublished(pb.ListUnpublishedRequest(limit=10))
    assert [r.evaluation.id for r in unpublished.records] == ids
    recorded = await stub.RecordPublications(pb.RecordPublicationsRequest(ids=ids[:2]))
    assert recorded.recorded == 2
    cancelled = await stub.CancelEvaluation(
        pb.CancelEvaluationRequest(tenant="acme", id=ids[0], reason="no")
    )
    assert cancelled.previous_state == State.STATE_QUEUED
    assert cancelled.record.evaluation.state == State.STATE_CANCELLED
    stats = await stub.GetStats(pb.GetStatsRequest())
    counts = {c.state: c.count for c in stats.state_counts}
    assert (counts[State.STATE_QUEUED], counts[State.STATE_CANCELLED]) == (4, 1)
    normal = next(q for q in stats.queued if q.priority == evaluation_pb2.PRIORITY_NORMAL)
    assert normal.depth == 4
    position = await stub.GetEvaluation(
        pb.GetEvaluationRequest(tenant="acme", id=ids[4], include_queue_position=True)
    )
    assert position.record.evaluation.queue_position == 3
    later = timestamp_pb2.Timestamp()
    later.FromMicroseconds(cancelled.record.evaluation.end_time.ToMicroseconds() + 1)
    purged = await stub.PurgeEvaluations(pb.PurgeEvaluationsRequest(end_time_before=later))
    assert purged.purged == 1
    missing_time = await refused(stub.PurgeEvaluations(pb.PurgeEvaluationsRequest()))
    assert missing_time.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_api_keys_over_grpc(stub: pb_grpc.StorageServiceAsyncStub) -> None:
    created = await stub.CreateApiKey(pb.CreateApiKeyRequest(tenant="acme", display_name="ci"))
    assert created.api_key.role == api_key_pb2.ROLE_USER
    found = await stub.AuthenticateApiKey(pb.AuthenticateApiKeyRequest(secret=created.secret))
    assert found.api_key.tenant == "acme"
    listed = await stub.ListApiKeys(pb.ListApiKeysRequest(tenant="acme"))
    assert [k.id for k in listed.api_keys] == [created.api_key.id]
    revoked = await stub.RevokeApiKey(pb.RevokeApiKeyRequest(id=created.api_key.id))
    assert revoked.api_key.HasField("revoke_time")
    error = await refused(
        stub.AuthenticateApiKey(pb.AuthenticateApiKeyRequest(secret=created.secret))
    )
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_the_server_registers_health_and_reflection(server: ServiceApp) -> None:
    async with grpc.aio.insecure_channel(server.address) as channel:
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        names = [s.name async for r in responses for s in r.list_services_response.service]
    assert SERVICE_NAME in names
    assert "grpc.health.v1.Health" in names


def storage_env(tmp_path: Path, database_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "EVALMESH_DATABASE_URL": database_url,
        "EVALMESH_LISTEN_ADDRESS": "127.0.0.1:0",
        "EVALMESH_PORT_FILE": str(tmp_path / "storage.port"),
        "EVALMESH_PROBE_INTERVAL": "50ms",
    }


async def test_the_service_process_migrates_serves_and_stops_cleanly_on_sigterm(
    storage_process: StorageProcess,
) -> None:
    await wait_for_serving(storage_process.address, timeout=10)
    async with grpc.aio.insecure_channel(storage_process.address) as channel:
        response = await pb_grpc.StorageServiceStub(channel).CreateEvaluation(create("proc"))
    assert response.created
    assert storage_process.stop() == 0, storage_process.log()
    assert not storage_process.port_file.exists()


def test_the_service_process_refuses_a_database_schema_from_the_future(tmp_path: Path) -> None:
    path = tmp_path / "storage.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        connection.execute("INSERT INTO alembic_version VALUES ('9999_future')")
    finished = subprocess.run(
        [sys.executable, "-m", "evalmesh_storage"],
        env=storage_env(tmp_path, f"sqlite+aiosqlite:///{path}"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert finished.returncode != 0
    assert "9999_future" in finished.stderr
    assert "refusing to serve" in finished.stderr
