"""How an executor asks the work queue for jobs: pulls that find nothing are not repeated."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import cast

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from evalmesh_common import Seconds
from evalmesh_common.subjects import JOBS_STREAM, job_consumer, job_hint_subject, job_subject
from evalmesh_executor.config import PullConfig
from evalmesh_executor.pool import Pool
from evalmesh_executor.runs import RunRegistry
from evalmesh_executor.worker import JobRunner

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


class _TakenJobs:
    """Stands in for the job runner: acks each job it is given and keeps its subject; naks
    each it is told to requeue."""

    def __init__(self) -> None:
        self.subjects: list[str] = []
        self.taken = asyncio.Event()

    async def requeue(self, msg: Msg, delay: float) -> None:
        await msg.nak()

    async def process(self, msg: Msg, ack_wait: float, sandbox_done: Callable[[], None]) -> None:
        self.subjects.append(msg.subject)
        self.taken.set()
        await msg.ack()
        sandbox_done()


@dataclass
class _PoolAlone:
    """A pool of one slot in the test's own process, on a mesh's queue, with a stand-in runner;
    only hints wake it (its recheck is an hour)."""

    client: NatsClient
    pool: Pool
    jobs: _TakenJobs
    running: asyncio.Task[None]


@contextlib.asynccontextmanager
async def _pool_alone(make_mesh: MakeMesh) -> AsyncIterator[_PoolAlone]:
    mesh = make_mesh({})  # NATS with the scheduler's queue, and no executor
    client = await nats.connect(mesh.nats_url)
    jobs = _TakenJobs()
    pool = Pool(
        client,
        cast(JobRunner, jobs),
        RunRegistry(),
        slots=1,
        pull=PullConfig(recheck_interval=Seconds(3600)),
        can_pull=lambda: True,
    )
    await pool.bind()
    running = asyncio.create_task(pool.run())
    try:
        await asyncio.sleep(0.3)  # the pool has found every class empty
        yield _PoolAlone(client, pool, jobs, running)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await pool.close()
        await client.close()


LATE_JOB = f"{job_subject('normal')}.late"


async def test_a_job_hinted_before_the_queue_can_hand_it_out_is_taken_without_the_recheck(
    make_mesh: MakeMesh,
) -> None:
    async with _pool_alone(make_mesh) as alone:
        # A hint for a job that reaches the queue only a moment later (as when the consumer
        # learns of a stored job after its publisher was told it is stored).
        await alone.client.publish(job_hint_subject("normal"), b"1")
        await alone.client.flush()
        await asyncio.sleep(0.03)
        await alone.client.jetstream().publish(LATE_JOB, b"not a real job")
        await asyncio.wait_for(alone.jobs.taken.wait(), 10)
        assert alone.jobs.subjects == [LATE_JOB]


async def test_closing_while_a_waiting_pull_is_out_gives_its_job_back_at_once(
    make_mesh: MakeMesh,
) -> None:
    async with _pool_alone(make_mesh) as alone:
        client, consumer = alone.client, job_consumer("normal")
        waiting_pulls = asyncio.Queue[bytes]()

        async def on_pull(msg: Msg) -> None:
            if b"expires" in msg.data:
                waiting_pulls.put_nowait(msg.data)

        pulls = f"$JS.API.CONSUMER.MSG.NEXT.{JOBS_STREAM}.{consumer}"
        watch = await client.subscribe(pulls, cb=on_pull)
        await client.publish(job_hint_subject("normal"), b"1")  # a hint with no job yet
        await asyncio.wait_for(waiting_pulls.get(), 10)
        # The pool is asked to close while its waiting pull is out, and the job comes then.
        closing = asyncio.create_task(alone.pool.close())
        await client.jetstream().publish(LATE_JOB, b"not a real job")
        await asyncio.wait_for(closing, 10)
        await asyncio.wait_for(alone.running, 10)
        await watch.unsubscribe()
        # Given back, not left to a closed inbox until its ack_wait: anyone can pull it now.
        again = await client.jetstream().pull_subscribe_bind(consumer, JOBS_STREAM)
        [msg] = await again.fetch(1, timeout=5)
        assert msg.subject == LATE_JOB
        assert alone.jobs.subjects == []
        await msg.ack()
