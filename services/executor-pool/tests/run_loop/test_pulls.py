"""How an executor asks the work queue for jobs: pulls that find nothing are not repeated."""

from __future__ import annotations

import asyncio
import collections

import pytest
from nats.aio.msg import Msg

from evalmesh_common.subjects import JOBS_STREAM, job_consumer

from .conftest import MakeMesh
from .harness import Driver, State


async def test_a_stream_of_one_class_costs_one_pull_per_job_not_one_per_class(
    driver: Driver,
) -> None:
    assert driver.nats is not None
    pulls: collections.Counter[str] = collections.Counter()

    async def count(msg: Msg) -> None:
        pulls[msg.subject.rsplit(".", 1)[-1]] += 1

    listener = await driver.nats.subscribe(f"$JS.API.CONSUMER.MSG.NEXT.{JOBS_STREAM}.*", cb=count)
    await driver.nats.flush()
    # Normal priority, all queued at once: the slots take them one after the other.
    await asyncio.gather(*(driver.run("print(1)") for _ in range(12)))
    await listener.unsubscribe()
    assert pulls[job_consumer("normal")] >= 12
    # Before, the policy asked the (empty) high class first for every job: 12 pulls or more.
    # Now it asks again only when a job of that class is published or on the recheck timer.
    assert pulls[job_consumer("high")] < 6, pulls


async def test_an_idle_executor_takes_every_new_job_on_its_hint_without_waiting_to_recheck(
    make_mesh: MakeMesh,
) -> None:
    mesh = make_mesh({})
    # Rechecking an empty queue once an hour: only the new-job hints can wake the pool.
    executor = mesh.executor({"EVALMESH_FETCH_RECHECK": "3600"})
    async with Driver(mesh) as driver:
        for index in range(20):  # one at a time: the pool is idle when each job arrives
            try:
                evaluation = await driver.run(f"print({index})", within=20)
            except TimeoutError as exc:
                pytest.fail(f"job {index}: {exc}\n{executor.process.log_tail()}")
            assert evaluation.state == State.STATE_SUCCEEDED, evaluation
