"""The new-job hint idle executors wake up on comes once the job is stored, never before it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc.aio
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from scheduler_test_helpers import Mesh, job_count, start_scheduler, submit_request

from evalmesh.v1 import evaluation_pb2
from evalmesh_common.subjects import job_hint_subject

Channels = Callable[[str], grpc.aio.Channel]


async def test_every_hint_finds_its_job_already_in_the_work_queue(
    mesh: Mesh, channels: Channels, natsc: Client, js: JetStreamContext
) -> None:
    _, scheduler = await start_scheduler(mesh, channels)
    # Each hint is checked the moment it arrives, before anything else is submitted.
    checked: asyncio.Queue[tuple[str, bytes, int]] = asyncio.Queue()

    async def on_hint(msg: Msg) -> None:  # nobody pulls: the queue holds every stored job
        await checked.put((msg.subject, msg.data, await job_count(js)))

    await natsc.subscribe(job_hint_subject("high"), cb=on_hint)
    await natsc.subscribe(job_hint_subject("normal"), cb=on_hint)
    await natsc.flush()
    for index, priority in enumerate(
        (evaluation_pb2.PRIORITY_HIGH, evaluation_pb2.PRIORITY_NORMAL, evaluation_pb2.PRIORITY_HIGH)
    ):
        await scheduler.SubmitEvaluation(
            submit_request(f"hinted-{index}", priority=priority), timeout=10
        )
        subject, count, stored = await asyncio.wait_for(checked.get(), 10)
        # The hint names the job's class and comes after the job it announces is stored.
        expected_class = "high" if priority == evaluation_pb2.PRIORITY_HIGH else "normal"
        assert (subject, count) == (job_hint_subject(expected_class), b"1")
        assert stored == index + 1
    assert checked.empty()  # one hint per publication, no more
