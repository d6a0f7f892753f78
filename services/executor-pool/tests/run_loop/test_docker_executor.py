"""Docker executors in a real mesh: their containers carry the instance id the executor
resolved, and its warm pool waits in the shape of the default limits; HOSTILE.md F04: kill -9
an executor mid-run. Its job's container dies with it (the attach connection was its
lifeline), so do its warm containers; a restart under the same instance id removes all of
them at start; the evaluation is redelivered and runs again, once."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import docker
import pytest

from evalmesh.executor.v1 import executor_service_pb2
from evalmesh.v1 import evaluation_pb2
from evalmesh_executor.sandbox.docker import LABEL_OWNER
from evalmesh_testing.docker_engine import Engine

from .conftest import MakeMesh
from .harness import Driver, Service, job_processes, two_process_job

RUN_LOOP_BACKENDS = ("docker",)
MiB = 1024 * 1024

State = evaluation_pb2.Evaluation.State
STDOUT = evaluation_pb2.OUTPUT_STREAM_STDOUT


async def _eventually(check: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.02)


async def test_containers_are_owned_by_the_instance_id_and_warm_ones_wait_in_the_default_shape(
    driver: Driver, executor: Service, docker_engine: Engine
) -> None:
    stub = driver.executor_stub(executor)
    status = (await stub.GetPoolStatus(executor_service_pb2.GetPoolStatusRequest())).status
    assert status.instance_id.startswith("executor-")  # resolved at start, none configured
    api = docker.APIClient(base_url=docker_engine.base_url, version="1.41", timeout=30)
    labelled = {"label": f"{LABEL_OWNER}={status.instance_id}"}

    def shapes() -> list[tuple[int, int]]:
        try:
            listed = [api.inspect_container(c["Id"]) for c in api.containers(filters=labelled)]
        except docker.errors.NotFound:  # removed meanwhile
            return []
        return [(c["HostConfig"]["Memory"], c["HostConfig"]["PidsLimit"]) for c in listed]

    try:  # once the self-check's container is gone: one warm container per slot
        default = [(256 * MiB, 64)] * status.slots
        await _eventually(lambda: shapes() == default, 20, "no warm pool of the default shape")
    finally:
        api.close()
    evaluation = await driver.run("print('warm')")
    assert evaluation.result.stdout == b"warm\n"


@pytest.mark.slow
async def test_kill_9_mid_run_takes_every_container_along_and_the_evaluation_runs_again_once(
    make_mesh: MakeMesh, docker_engine: Engine
) -> None:
    mesh = make_mesh({"EVALMESH_QUEUE_ACK_WAIT": "2"})
    instance = f"executor-f04-{uuid.uuid4().hex[:8]}"
    env = {"EVALMESH_EXECUTOR_LEASE": "2", "EVALMESH_INSTANCE_ID": instance}
    first = mesh.executor(env)
    api = docker.APIClient(base_url=docker_engine.base_url, version="1.41", timeout=30)

    def containers() -> dict[str, str]:
        listed = api.containers(all=True, filters={"label": f"{LABEL_OWNER}={instance}"})
        return {str(c["Id"]): str(c["State"]) for c in listed}

    try:
        async with Driver(mesh) as driver:
            log = await driver.events()
            marker = f"evalmesh-f04-docker-{uuid.uuid4().hex}"
            evaluation_id = await driver.submit(two_process_job(marker))
            await log.wait_for(lambda: bool(log.output(evaluation_id, STDOUT)), 20)
            assert len(job_processes(marker.encode())) == 2
            left = containers()
            assert len(left) >= 2, "the job's container and warm ones"
            first.kill()
            await _eventually(
                lambda: not job_processes(marker.encode()), 1.0, "the job outlived its executor"
            )
            # Stopped, or never started (created while the executor died): none runs.
            await _eventually(
                lambda: set(containers().values()) <= {"exited", "created"},
                5.0,
                "a container still runs",
            )
            second = mesh.executor(env)  # the same instance id: it removes what the first left
            assert not set(left) & set(containers()), "leftovers were reaped at the start"
            evaluation = await driver.wait_terminal(evaluation_id, within=40)
            # The terminal event is published once storage has the result: it may arrive after.
            await log.wait_for(lambda: State.STATE_SUCCEEDED in log.states(evaluation_id), 10)
    finally:
        api.close()
    assert evaluation.state == State.STATE_SUCCEEDED
    assert evaluation.attempt == 2
    assert evaluation.result.stdout == b"started\ndone\n"  # attempt 2's output only
    assert evaluation.executor_id == instance
    assert second.pid != first.pid
    assert [e.attempt for e in log.of(evaluation_id) if e.state == State.STATE_SUCCEEDED] == [2]
