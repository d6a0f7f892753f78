"""Components of a real mesh stopped or killed: reads degrade instead of failing, and an executor
restarted under its identity gets its predecessor's runs going again in seconds, not a lease."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import grpc
import pytest

from evalmesh.v1 import evaluation_pb2, evaluation_service_pb2, evaluation_service_pb2_grpc
from evalmesh_deploy.local.mesh import LocalMesh
from evalmesh_testing.mesh import mesh_for_tests

pytestmark = pytest.mark.slow

ES = evaluation_service_pb2
State = evaluation_pb2.Evaluation
POSITION_UNAVAILABLE = "evalmesh-queue-position-unavailable"
T = TypeVar("T")


def _start(state_dir: Path, without: tuple[str, ...] = ()) -> LocalMesh:
    mesh = mesh_for_tests(state_dir, {"EVALMESH_PROBE_INTERVAL": "0.2"}, without)
    try:
        mesh.start(timeout=120)
    except BaseException:
        mesh.stop()
        raise
    return mesh


def _eventually(read: Callable[[], T], done: Callable[[T], bool], within: float, what: str) -> T:
    deadline = time.monotonic() + within
    while True:
        value = read()
        if done(value):
            return value
        assert time.monotonic() < deadline, f"{what} did not happen within {within:g} s: {value}"
        time.sleep(0.1)


class Api:
    """The evaluation API on the mesh's gateway, with the admin key."""

    def __init__(self, mesh: LocalMesh) -> None:
        self.channel = grpc.insecure_channel(mesh.endpoints.services["gateway"])
        self.stub = evaluation_service_pb2_grpc.EvaluationServiceStub(self.channel)
        self.metadata = (("authorization", f"Bearer {mesh.endpoints.admin_api_key}"),)

    def create(self, code: str) -> evaluation_pb2.Evaluation:
        spec = evaluation_pb2.EvaluationSpec(code=code)
        request = ES.CreateEvaluationRequest(request_id=str(uuid.uuid4()), spec=spec)
        return self.stub.CreateEvaluation(request, metadata=self.metadata, timeout=30).evaluation

    def get(self, evaluation_id: str) -> tuple[evaluation_pb2.Evaluation, dict[str, str]]:
        request = ES.GetEvaluationRequest(id=evaluation_id)
        reply, call = self.stub.GetEvaluation.with_call(request, metadata=self.metadata, timeout=30)
        return reply.evaluation, {k: str(v) for k, v in call.trailing_metadata() or ()}


@pytest.fixture
def mesh_without_executors(tmp_path: Path) -> Iterator[LocalMesh]:
    mesh = _start(tmp_path / "mesh", without=("executor-pool",))
    yield mesh
    mesh.stop()


@pytest.fixture
def full_mesh(tmp_path: Path) -> Iterator[LocalMesh]:
    mesh = _start(tmp_path / "mesh")
    yield mesh
    mesh.stop()


def test_reading_a_queued_evaluation_while_the_scheduler_is_down_answers_without_a_position(
    mesh_without_executors: LocalMesh,
) -> None:
    mesh = mesh_without_executors
    api = Api(mesh)
    created = api.create("print('waiting')")
    evaluation, trailing = api.get(created.id)
    assert evaluation.state == State.STATE_QUEUED
    assert evaluation.HasField("queue_position")
    assert POSITION_UNAVAILABLE not in trailing

    mesh.process("scheduler").stop()  # by pid
    evaluation, trailing = api.get(created.id)
    # The read still answers, from storage, without the scheduler's estimate, and says why.
    assert (evaluation.id, evaluation.state) == (created.id, State.STATE_QUEUED)
    assert evaluation.spec.code == "print('waiting')"
    assert not evaluation.HasField("queue_position")
    assert not evaluation.HasField("estimated_start_time")
    assert trailing[POSITION_UNAVAILABLE].startswith("SCHEDULER_UNAVAILABLE: "), trailing

    # The position comes back with the scheduler.
    mesh.respawn("scheduler")
    evaluation, trailing = _eventually(
        lambda: api.get(created.id),
        lambda got: got[0].HasField("queue_position"),
        within=60,
        what="the position's return",
    )
    assert evaluation.queue_position == 0
    assert POSITION_UNAVAILABLE not in trailing
    api.channel.close()


def test_an_executor_killed_mid_run_and_restarted_under_its_id_runs_attempt_two_in_seconds(
    full_mesh: LocalMesh,
) -> None:
    mesh = full_mesh
    api = Api(mesh)
    code = "import time\nprint('started', flush=True)\ntime.sleep(2)\nprint('done')\n"
    created = api.create(code)
    _eventually(
        lambda: api.get(created.id)[0],
        lambda got: got.state == State.STATE_RUNNING,
        within=60,
        what="the first attempt's start",
    )
    executor = mesh.process("executor-pool")
    os.kill(executor.pid, signal.SIGKILL)
    executor.wait(10)
    killed = time.time()

    mesh.respawn("executor-pool")  # the launcher keeps its EVALMESH_INSTANCE_ID
    done = _eventually(
        lambda: api.get(created.id)[0],
        lambda got: got.state not in (State.STATE_QUEUED, State.STATE_RUNNING),
        within=90,
        what="the evaluation's end",
    )
    assert done.state == State.STATE_SUCCEEDED, done.result
    assert done.attempt == 2
    assert done.result.stdout == b"started\ndone\n"
    # Its lease (30 s) never had to run out: attempt 2 started seconds after the kill.
    restarted_after = done.start_time.ToNanoseconds() / 1e9 - killed
    assert restarted_after < 15, f"attempt 2 started {restarted_after:.1f} s after the kill"
    api.channel.close()
