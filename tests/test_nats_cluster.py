"""The work queues on a NATS JetStream cluster of three: the scheduler's topology at R3 puts every
stream, consumer and bucket on all three members, and the loss of the leader of the work queue
loses nothing and stops publishing only while the others elect a new one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from evalmesh_common.subjects import JOBS_STREAM, job_message_subject
from evalmesh_scheduler.config import QueueConfig
from evalmesh_scheduler.topology import Topology, kv_stream_name
from evalmesh_testing.nats_cluster import NatsCluster


@pytest.fixture
async def client(nats_cluster: NatsCluster) -> AsyncIterator[Client]:
    connection = await nats.connect(
        servers=nats_cluster.url.split(","), max_reconnect_attempts=-1, reconnect_time_wait=0.2
    )
    yield connection
    await connection.close()


@pytest.fixture
async def js(client: Client) -> JetStreamContext:
    jetstream = client.jetstream(timeout=5)
    topology = Topology(QueueConfig(replicas=3))
    await topology.ensure(jetstream)
    return jetstream


async def test_the_topology_at_r3_puts_every_stream_consumer_and_bucket_on_three_members(
    js: JetStreamContext,
) -> None:
    topology = Topology(QueueConfig(replicas=3))
    names = [stream.name for stream in topology.streams()]
    names += [kv_stream_name(bucket.bucket) for bucket in topology.buckets()]
    for name in names:
        assert name is not None
        info = await js.stream_info(name)
        assert info.config.num_replicas == 3, name
        assert info.cluster is not None, name
        assert info.cluster.leader, name
        assert len(info.cluster.replicas or []) == 2, name
    for consumer in topology.job_consumers():
        assert consumer.durable_name is not None
        consumer_info = await js.consumer_info(JOBS_STREAM, consumer.durable_name)
        assert consumer_info.config.num_replicas == 3


async def test_the_loss_of_the_work_queues_leader_loses_no_job(
    nats_cluster: NatsCluster, js: JetStreamContext
) -> None:
    subjects = [job_message_subject("normal", f"eval-{index}") for index in range(20)]
    for subject in subjects[:10]:
        await js.publish(subject, b"job", stream=JOBS_STREAM)
    info = await js.stream_info(JOBS_STREAM)
    assert info.cluster is not None
    leader = [node.name for node in nats_cluster.nodes].index(info.cluster.leader or "")
    await asyncio.to_thread(nats_cluster.kill, leader)
    killed = time.monotonic()
    for subject in subjects[10:]:
        while True:  # as the scheduler does: a failed publish is published again
            try:
                await js.publish(subject, b"job", stream=JOBS_STREAM, timeout=1)
                break
            except (nats.errors.Error, TimeoutError):
                await asyncio.sleep(0.1)
    # The survivors elect a new leader within seconds, not a timeout of minutes.
    assert time.monotonic() - killed < 15
    assert (await js.stream_info(JOBS_STREAM)).state.messages == 20
    await asyncio.to_thread(nats_cluster.start_member, leader)
    await asyncio.to_thread(nats_cluster.wait_healthy, 60)
    assert (await js.stream_info(JOBS_STREAM)).state.messages == 20
