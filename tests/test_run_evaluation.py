"""RunEvaluation through the real gateway: queue and follow in one call, as CreateEvaluation and a
watch from offset 0 would, and idempotent on the request_id like CreateEvaluation."""

from __future__ import annotations

import re
import urllib.request
import uuid
from collections.abc import Iterator

import grpc
import pytest

from evalmesh.v1 import evaluation_pb2, evaluation_service_pb2, evaluation_service_pb2_grpc
from evalmesh_deploy.local.mesh import MeshEndpoints

ES = evaluation_service_pb2
State = evaluation_pb2.Evaluation.State
STDOUT, STDERR = evaluation_pb2.OUTPUT_STREAM_STDOUT, evaluation_pb2.OUTPUT_STREAM_STDERR

CHATTY = """
import sys, time
print("one", flush=True)
time.sleep(0.3)
print("two", file=sys.stderr, flush=True)
print("three")
"""


@pytest.fixture(scope="module")
def evaluations(mesh: MeshEndpoints) -> Iterator[evaluation_service_pb2_grpc.EvaluationServiceStub]:
    channel = grpc.insecure_channel(mesh.services["gateway"])
    yield evaluation_service_pb2_grpc.EvaluationServiceStub(channel)
    channel.close()


@pytest.fixture(scope="module")
def key(mesh: MeshEndpoints) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {mesh.admin_api_key}"),)


def _run(
    evaluations: evaluation_service_pb2_grpc.EvaluationServiceStub,
    key: tuple[tuple[str, str], ...],
    code: str,
    request_id: str,
) -> list[ES.RunEvaluationResponse]:
    request = ES.RunEvaluationRequest(
        request_id=request_id, spec=evaluation_pb2.EvaluationSpec(code=code)
    )
    return list(evaluations.RunEvaluation(request, metadata=key, timeout=60))


def _output(responses: list[ES.RunEvaluationResponse]) -> dict[int, bytes]:
    streams: dict[int, bytes] = {STDOUT: b"", STDERR: b""}
    for response in responses:
        if response.HasField("output"):
            chunk = response.output
            assert chunk.offset == len(streams[chunk.stream]), "no gap, no repeat"
            streams[chunk.stream] += chunk.data
    return streams


def test_one_run_call_streams_the_queued_evaluation_its_output_and_its_end(
    evaluations: evaluation_service_pb2_grpc.EvaluationServiceStub,
    key: tuple[tuple[str, str], ...],
) -> None:
    responses = _run(evaluations, key, CHATTY, uuid.uuid4().hex)
    snapshots = [r.evaluation for r in responses if r.HasField("evaluation")]
    assert responses[0].HasField("evaluation")
    assert responses[-1].HasField("evaluation")
    assert snapshots[0].state == State.STATE_QUEUED
    assert snapshots[-1].state == State.STATE_SUCCEEDED
    assert State.STATE_RUNNING in [s.state for s in snapshots]
    assert len({s.id for s in snapshots}) == 1
    assert _output(responses) == {STDOUT: b"one\nthree\n", STDERR: b"two\n"}
    stored = evaluations.GetEvaluation(
        ES.GetEvaluationRequest(id=snapshots[0].id), metadata=key, timeout=10
    ).evaluation
    assert (stored.state, stored.result.stdout) == (State.STATE_SUCCEEDED, b"one\nthree\n")


def test_a_run_is_followed_from_its_creation_without_reading_it_from_storage(
    evaluations: evaluation_service_pb2_grpc.EvaluationServiceStub,
    key: tuple[tuple[str, str], ...],
    mesh: MeshEndpoints,
) -> None:
    # The gateway subscribed under the id it chose before the evaluation existed, so neither its
    # first snapshot nor anything after needs storage's GetEvaluation (a watch opens with one).
    before = _storage_calls(mesh, "GetEvaluation")
    for _ in range(3):
        responses = _run(evaluations, key, "print('quick')", uuid.uuid4().hex)
        assert _output(responses)[STDOUT] == b"quick\n"
    assert _storage_calls(mesh, "GetEvaluation") == before


def _storage_calls(mesh: MeshEndpoints, method: str) -> float:
    with urllib.request.urlopen(mesh.metrics["storage"], timeout=10) as reply:
        text = reply.read().decode()
    pattern = rf'^grpc_server_handled_total{{[^}}]*grpc_method="{method}"[^}}]*}} (\S+)$'
    return sum(float(value) for value in re.findall(pattern, text, re.MULTILINE))


def test_a_run_repeated_with_its_request_id_follows_the_evaluation_it_made(
    evaluations: evaluation_service_pb2_grpc.EvaluationServiceStub,
    key: tuple[tuple[str, str], ...],
) -> None:
    request_id = uuid.uuid4().hex
    first = _run(evaluations, key, "print('once')", request_id)
    again = _run(evaluations, key, "print('once')", request_id)
    made = first[0].evaluation.id
    snapshots = [r.evaluation for r in again if r.HasField("evaluation")]
    assert {s.id for s in snapshots} == {made}
    # Already ended: its terminal snapshot comes first, as a watch of it shows.
    assert snapshots[-1].state == State.STATE_SUCCEEDED
    assert _output(again) == _output(first) == {STDOUT: b"once\n", STDERR: b""}
    create = ES.CreateEvaluationRequest(
        request_id=request_id, spec=evaluation_pb2.EvaluationSpec(code="print('once')")
    )
    reply = evaluations.CreateEvaluation(create, metadata=key, timeout=10)
    assert (reply.evaluation.id, reply.created) == (made, False)


def test_a_run_refused_as_a_create_would_be_creates_nothing(
    evaluations: evaluation_service_pb2_grpc.EvaluationServiceStub,
    key: tuple[tuple[str, str], ...],
) -> None:
    label = uuid.uuid4().hex
    request = ES.RunEvaluationRequest(
        request_id=uuid.uuid4().hex,
        spec=evaluation_pb2.EvaluationSpec(code="print(1)", runtime="no-such", labels={"t": label}),
    )
    with pytest.raises(grpc.RpcError) as refused:
        list(evaluations.RunEvaluation(request, metadata=key, timeout=30))
    assert refused.value.code() in (
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    listed = evaluations.ListEvaluations(
        ES.ListEvaluationsRequest(labels={"t": label}), metadata=key, timeout=10
    )
    assert not listed.evaluations
