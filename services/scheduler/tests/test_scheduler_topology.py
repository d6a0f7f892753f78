"""The topology is created once, updated in place when settings change, and the leader lease
gives the loops to exactly one holder at a time (real nats-server, scheduler code in-process)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from scheduler_test_helpers import Mesh, eventually

from evalmesh_common import Seconds
from evalmesh_common.subjects import (
    DEAD_LETTER_STREAM,
    JOB_ADVISORIES_STREAM,
    JOBS_STREAM,
    LEADER_BUCKET,
    PRIORITY_NAMES,
    job_consumer,
)
from evalmesh_scheduler.config import QueueConfig
from evalmesh_scheduler.leader import LeaderElection
from evalmesh_scheduler.topology import Topology


@pytest.fixture
async def bare_js(bare_nats: Mesh) -> AsyncIterator[JetStreamContext]:
    client: Client = await nats.connect(bare_nats.nats_url)
    yield client.jetstream()
    await client.close()


async def test_the_topology_is_created_once_and_updated_in_place_when_settings_change(
    bare_js: JetStreamContext,
) -> None:
    await Topology(QueueConfig(max_jobs=100, ack_wait=Seconds(30))).ensure(bare_js)
    await bare_js.publish("evalmesh.jobs.low.ev_kept", b"job")
    await Topology(QueueConfig(max_jobs=100, ack_wait=Seconds(30))).ensure(bare_js)  # nothing to do

    await Topology(QueueConfig(max_jobs=1000, ack_wait=Seconds(5), max_deliver=2)).ensure(bare_js)

    jobs = await bare_js.stream_info(JOBS_STREAM)
    assert jobs.config.max_msgs == 1100  # the admission limit plus headroom
    assert jobs.config.max_msgs_per_subject == 1
    assert jobs.state.messages == 1  # an update keeps the queued jobs
    for name in PRIORITY_NAMES:
        consumer = await bare_js.consumer_info(JOBS_STREAM, job_consumer(name))
        assert (consumer.config.ack_wait, consumer.config.max_deliver) == (5, 2)
    for stream in (JOB_ADVISORIES_STREAM, DEAD_LETTER_STREAM):
        assert (await bare_js.stream_info(stream)).config.name == stream


async def test_one_leader_at_a_time_and_a_follower_takes_over_when_it_resigns(
    bare_js: JetStreamContext,
) -> None:
    await Topology(QueueConfig(leader_ttl=Seconds(1.0))).ensure(bare_js)
    working: list[str] = []

    def election(name: str) -> LeaderElection:
        async def work() -> None:
            working.append(name)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()
            working.remove(name)

        return LeaderElection(bare_js, name, ttl=1.0, work=work)

    first, second = election("first"), election("second")
    first_task = asyncio.create_task(first.run())

    async def first_leads() -> bool:
        return working == ["first"]

    await eventually(first_leads, within=5, what="the first election")
    second_task = asyncio.create_task(second.run())
    await asyncio.sleep(1.5)  # more than a TTL of campaigning
    assert working == ["first"]
    assert (first.is_leader, second.is_leader) == (True, False)

    first_task.cancel()
    await asyncio.gather(first_task, return_exceptions=True)

    async def second_leads() -> bool:
        return working == ["second"]

    await eventually(second_leads, within=5, what="the take-over")
    leases = await bare_js.key_value(LEADER_BUCKET)
    assert (await leases.get("scheduler")).value == b"second"
    second_task.cancel()
    await asyncio.gather(second_task, return_exceptions=True)


async def test_a_replica_takes_back_at_once_a_lease_that_still_names_it_and_no_other(
    bare_js: JetStreamContext,
) -> None:
    # A TTL far longer than the test: nobody may wait for the key to expire.
    await Topology(QueueConfig(leader_ttl=Seconds(60.0))).ensure(bare_js)
    leases = await bare_js.key_value(LEADER_BUCKET)
    await leases.create("scheduler", b"restarted")  # left by its predecessor, or a lost renewal

    async def work() -> None:
        await asyncio.Event().wait()

    other = LeaderElection(bare_js, "other", ttl=60.0, work=work)
    restarted = LeaderElection(bare_js, "restarted", ttl=60.0, work=work)
    tasks = [asyncio.create_task(other.run()), asyncio.create_task(restarted.run())]

    async def restarted_leads() -> bool:
        return restarted.is_leader

    await eventually(restarted_leads, within=5, what="taking the lease back")
    assert not other.is_leader
    assert (await leases.get("scheduler")).value == b"restarted"
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
