"""python-ml in a real mesh, on a bwrap executor (the package tree scripts/setup builds) and on a
docker one (the offline-built image): a numpy/pandas/scikit-learn program succeeds and records
the runtime's exact digest, the executor's heartbeat names the packages, and the standard-library
runtime of the same executor still cannot import numpy. A submit for python-ml to a pool whose
healthy executors lack it is refused at once and creates nothing."""

from __future__ import annotations

import os
from pathlib import Path

import grpc.aio
import pytest
from sandbox_helpers import python_ml_tree_path

from evalmesh.executor.v1 import executor_service_pb2
from evalmesh.v1 import evaluation_pb2
from evalmesh_common import FailedPrecondition
from evalmesh_common.server import error_from_rpc
from evalmesh_testing.docker_engine import Engine, build_runtime_image

from .conftest import MakeMesh
from .harness import Driver, Service

RUN_LOOP_BACKENDS = ("bwrap", "docker")
MiB = 1024 * 1024
State = evaluation_pb2.Evaluation.State
REQUIREMENTS = Path(__file__).resolve().parents[2] / "images" / "python-ml" / "requirements.txt"

PROGRAM = """
import numpy as np, pandas as pd, sklearn
from sklearn.cluster import KMeans
points = np.vstack([np.zeros((20, 2)), np.full((20, 2), 10.0)])
labels = KMeans(n_clusters=2, n_init=3, random_state=0).fit_predict(points)
frame = pd.DataFrame({"label": labels})
print(np.__version__, pd.__version__, sklearn.__version__)
print(sorted(frame.groupby("label").size().tolist()))
"""


@pytest.fixture(scope="module")
def executor_env(mesh_backend: str, request: pytest.FixtureRequest) -> dict[str, str]:
    """Executors that offer python-ml: bwrap with the built tree, docker with the ML image."""
    if mesh_backend == "docker":
        engine: Engine = request.getfixturevalue("docker_engine")
        try:
            build_runtime_image(engine, "python-ml")
        except RuntimeError as exc:
            pytest.skip(f"the python-ml image cannot be built here: {exc}")
        return {"EVALMESH_SANDBOX_BACKEND": "docker", "EVALMESH_DOCKER_HOST": engine.base_url}
    if os.geteuid() != 0:
        pytest.skip("the executor runs the bwrap backend, which needs root (cgroup writes)")
    tree = python_ml_tree_path()
    return {
        "EVALMESH_SANDBOX_BACKEND": "bwrap",
        "EVALMESH_BWRAP_RUNTIME_TREES": f"python-ml={tree}",
    }


def _pins() -> dict[str, str]:
    lines = (line.split("#")[0].strip() for line in REQUIREMENTS.read_text().splitlines())
    return dict(line.split("==") for line in lines if line)


async def test_a_numpy_pandas_sklearn_program_succeeds_and_records_the_runtime_digest(
    driver: Driver, executor: Service
) -> None:
    evaluation = await driver.run(
        PROGRAM, runtime="python-ml", memory_bytes=512 * MiB, wall_timeout=120
    )
    assert evaluation.state == State.STATE_SUCCEEDED, evaluation.result.stderr.decode()[-2000:]
    pins = _pins()
    expected = " ".join(pins[name] for name in ("numpy", "pandas", "scikit-learn"))
    assert evaluation.result.stdout == f"{expected}\n[20, 20]\n".encode()
    stub = driver.executor_stub(executor)
    reply = await stub.ListRuntimes(executor_service_pb2.ListRuntimesRequest())
    ml = {runtime.name: runtime for runtime in reply.runtimes}["python-ml"]
    assert evaluation.runtime_digest == f"python-ml {ml.version} {ml.digest}"
    assert ml.digest.startswith("sha256:")
    installed = {package.name: package.version for package in ml.packages}
    assert {name: installed.get(name) for name in pins} == pins


async def test_the_standard_library_runtime_beside_it_still_cannot_import_numpy(
    driver: Driver,
) -> None:
    evaluation = await driver.run("import numpy")
    assert evaluation.state == State.STATE_FAILED
    assert b"ModuleNotFoundError: No module named 'numpy'" in evaluation.result.stderr
    assert evaluation.runtime_digest.startswith("python 3.")


async def test_python_ml_is_refused_at_once_where_the_healthy_executors_lack_it(
    make_mesh: MakeMesh, mesh_backend: str
) -> None:
    if mesh_backend != "bwrap":
        pytest.skip("the refusal is the scheduler's; one backend shows it")
    mesh = make_mesh({})
    mesh.executor({"EVALMESH_BWRAP_RUNTIME_TREES": ""})
    async with Driver(mesh) as driver:
        await driver.wait_offered("python")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await driver.submit("import numpy", runtime="python-ml")
        error = error_from_rpc(refused.value)
        assert isinstance(error, FailedPrecondition)
        assert error.reason == "RUNTIME_UNAVAILABLE"
        assert error.metadata == {"runtime": "python-ml", "offered": "python"}
        evaluation = await driver.run("print('python still runs')")
    assert evaluation.state == State.STATE_SUCCEEDED
