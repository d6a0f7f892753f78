"""Runtimes through the real mesh (as scripts/up starts it, on bwrap): the UI's NumPy example
runs on python-ml, a runtime that no executor offers is refused at once and creates nothing,
and ListRuntimes and ``evalmesh runtimes`` show each runtime's version, description and
packages."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from evalmesh.client import Client, State
from evalmesh.v1 import (
    cluster_service_pb2,
    cluster_service_pb2_grpc,
    evaluation_pb2,
    evaluation_service_pb2,
    evaluation_service_pb2_grpc,
)
from evalmesh_common import FailedPrecondition
from evalmesh_common.server import error_from_rpc
from evalmesh_deploy.local.mesh import MeshEndpoints, find_runtime_trees
from evalmesh_testing.mesh import running_mesh

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "clients" / "web" / "src" / "editor" / "examples.ts"
ML_REQUIREMENTS = ROOT / "services" / "executor-pool" / "images" / "python-ml" / "requirements.txt"
# A name the API accepts (EVALMESH_RUNTIMES below) that no executor offers.
UNOFFERED = "python-gpu"
ES = evaluation_service_pb2


@pytest.fixture(scope="module")
def ml_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshEndpoints]:
    """The mesh as scripts/up starts it, with the python-ml tree when it is built."""
    env = {"EVALMESH_PROBE_INTERVAL": "0.2", "EVALMESH_RUNTIMES": f"python,python-ml,{UNOFFERED}"}
    with running_mesh(tmp_path_factory.mktemp("mesh"), env) as local:
        yield local.endpoints


def _metadata(mesh: MeshEndpoints) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {mesh.admin_api_key}"),)


def _require_ml_tree() -> None:
    if "python-ml" not in find_runtime_trees(ROOT):
        pytest.skip("the python-ml tree is not built (scripts/setup builds it)")


def _pins() -> dict[str, str]:
    lines = (line.split("#")[0].strip() for line in ML_REQUIREMENTS.read_text().splitlines())
    return dict(line.split("==") for line in lines if line)


def numpy_example() -> str:
    """The code of the UI's "NumPy job" example, as the editor offers it."""
    source = EXAMPLES.read_text()
    block = source[source.index('id: "numpy"') :]
    code = block[block.index("code: [") + len("code: [") : block.index('].join("\\n")')]
    literals = re.findall(r"""^\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'),?\s*$""", code, re.M)
    return "\n".join(ast.literal_eval(literal) for literal in literals)


def test_the_ui_numpy_example_succeeds_on_python_ml(ml_mesh: MeshEndpoints) -> None:
    _require_ml_tree()
    code = numpy_example()
    assert "import numpy as np" in code
    with Client(ml_mesh.services["gateway"], ml_mesh.admin_api_key, timeout=60) as client:
        evaluation = client.run(code, runtime="python-ml")
    assert evaluation.state is State.SUCCEEDED, evaluation.stderr.decode()[-2000:]
    assert evaluation.stdout.startswith(f"numpy {_pins()['numpy']}\n".encode())
    assert b"largest eigenvalues:" in evaluation.stdout
    assert evaluation.proto.runtime_digest.startswith("python-ml 3.")


def test_a_runtime_no_executor_offers_is_refused_at_once_and_creates_nothing(
    ml_mesh: MeshEndpoints,
) -> None:
    channel = grpc.insecure_channel(ml_mesh.services["gateway"])
    stub = evaluation_service_pb2_grpc.EvaluationServiceStub(channel)
    label = uuid.uuid4().hex[:12]
    spec = evaluation_pb2.EvaluationSpec(code="print(1)", runtime=UNOFFERED, labels={"run": label})
    request = ES.CreateEvaluationRequest(request_id=uuid.uuid4().hex, spec=spec)
    try:
        for _ in range(2):  # a retry with the same request_id is refused the same way
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as raised:
                stub.CreateEvaluation(request, metadata=_metadata(ml_mesh), timeout=10)
            assert time.monotonic() - started < 5, "refused at once, not after deliveries"
            assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            error = error_from_rpc(raised.value)
            assert isinstance(error, FailedPrecondition)
            assert error.reason == "RUNTIME_UNAVAILABLE"
            assert error.metadata["runtime"] == UNOFFERED
            assert "python" in error.metadata["offered"].split(",")
        python = evaluation_pb2.EvaluationSpec(code="print(1)", labels={"run": label})
        batch = ES.BatchCreateEvaluationsRequest(
            requests=[
                ES.CreateEvaluationRequest(request_id=uuid.uuid4().hex, spec=python),
                ES.CreateEvaluationRequest(request_id=uuid.uuid4().hex, spec=spec),
            ]
        )
        with pytest.raises(grpc.RpcError) as raised:
            stub.BatchCreateEvaluations(batch, metadata=_metadata(ml_mesh), timeout=10)
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        listing = ES.ListEvaluationsRequest(labels={"run": label})
        found = stub.ListEvaluations(listing, metadata=_metadata(ml_mesh), timeout=10)
        assert list(found.evaluations) == [], "nothing was created"
    finally:
        channel.close()


def test_list_runtimes_shows_version_digest_description_and_packages(
    ml_mesh: MeshEndpoints,
) -> None:
    channel = grpc.insecure_channel(ml_mesh.services["gateway"])
    stub = cluster_service_pb2_grpc.ClusterServiceStub(channel)
    try:
        request = cluster_service_pb2.ListRuntimesRequest()
        reply = stub.ListRuntimes(request, metadata=_metadata(ml_mesh), timeout=10)
    finally:
        channel.close()
    runtimes = {runtime.name: runtime for runtime in reply.runtimes}
    python = runtimes["python"]
    assert python.executor_count == 1
    assert re.fullmatch(r"3\.\d+\.\d+", python.version)
    assert python.description == "CPython with the standard library only"
    assert [digest[:7] for digest in python.digests] == ["sha256:"]
    assert list(python.packages) == []
    assert runtimes[UNOFFERED].executor_count == 0
    if "python-ml" in find_runtime_trees(ROOT):
        ml = runtimes["python-ml"]
        assert ml.executor_count == 1
        assert ml.version == python.version
        assert "numpy" in ml.description
        assert {p.name: p.version for p in ml.packages} == _pins()
        assert ml.digests != python.digests


def test_evalmesh_runtimes_prints_version_description_and_packages(
    ml_mesh: MeshEndpoints,
) -> None:
    env = {
        **os.environ,
        "EVALMESH_ADDRESS": ml_mesh.services["gateway"],
        "EVALMESH_API_KEY": ml_mesh.admin_api_key,
        "NO_COLOR": "1",
        "COLUMNS": "400",
    }
    done = subprocess.run(
        [sys.executable, "-m", "evalmesh.cli", "runtimes"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = {line.split()[0]: line for line in done.stdout.decode().splitlines() if line.strip()}
    assert lines["NAME"].split() == ["NAME", "EXECUTORS", "VERSION", "DESCRIPTION", "PACKAGES"]
    assert re.search(r"^python\s+1\s+3\.\d+\.\d+\s+CPython with the standard library only\s+-\s*$",
                     lines["python"])  # fmt: skip
    assert re.search(rf"^{UNOFFERED}\s+0\s", lines[UNOFFERED])
    if "python-ml" in find_runtime_trees(ROOT):
        assert f"numpy {_pins()['numpy']}" in lines["python-ml"]
        assert "CPython with numpy" in lines["python-ml"]
