"""A job JetStream will never deliver again, though it is still in the stream, counts as missing.

Seen under chaos: a job whose deliveries were spent without the max-deliveries advisory ever
arriving (or whose consumer state a restarted nats-server lost) stays in the work queue below its
consumer's ack floor, holding its subject, and its evaluation stays QUEUED for good.
"""

from __future__ import annotations

import asyncio

import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig
from nats.js.errors import NotFoundError
from scheduler_test_helpers import Mesh

from evalmesh.storage.v1 import record_pb2
from evalmesh_common.subjects import JOBS_STREAM, job_consumer, job_filter
from evalmesh_scheduler import jobs
from evalmesh_scheduler.jobs import JobQueue, subject_for


def _record(evaluation_id: str) -> record_pb2.EvaluationRecord:
    record = record_pb2.EvaluationRecord()
    record.evaluation.id = evaluation_id
    return record


async def test_a_job_stranded_below_the_ack_floor_is_dropped_and_reported_missing(
    bare_nats: Mesh, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs, "_STRANDED_AFTER", 0.3)
    client = await nats.connect(bare_nats.nats_url)
    js = client.jetstream()
    await js.add_stream(
        StreamConfig(
            name=JOBS_STREAM,
            subjects=[job_filter("normal")],
            retention=RetentionPolicy.WORK_QUEUE,
            max_msgs_per_subject=1,
        )
    )
    await js.add_consumer(
        JOBS_STREAM,
        ConsumerConfig(
            durable_name=job_consumer("normal"),
            filter_subject=job_filter("normal"),
            ack_policy=AckPolicy.EXPLICIT,
            max_deliver=1,
            ack_wait=0.5,
        ),
    )
    stranded, acked, later = _record("ev_stranded"), _record("ev_acked"), _record("ev_later")
    for record in (stranded, acked):
        await js.publish(subject_for(record), b"job", stream=JOBS_STREAM)
    executor = await js.pull_subscribe_bind(job_consumer("normal"), stream=JOBS_STREAM)
    await executor.fetch(1, timeout=5)  # delivered once, never acked: its one delivery is spent
    await asyncio.sleep(0.8)
    (second,) = await executor.fetch(1, timeout=5)
    await second.ack_sync()  # acked away, and the ack floor moves past the stranded job
    await js.publish(subject_for(later), b"job", stream=JOBS_STREAM)  # still deliverable
    queue = JobQueue(client, js, max_jobs=100, max_bytes=1 << 20, timeout=5)
    try:
        records = [stranded, acked, later]
        # Seen below the floor once is not enough: an advisory may be on its way.
        assert await queue.missing(records) == [acked]
        assert (await js.get_last_msg(JOBS_STREAM, subject_for(stranded))).seq == 1
        await asyncio.sleep(0.4)
        assert await queue.missing(records) == [stranded, acked]
        with pytest.raises(NotFoundError):
            await js.get_last_msg(JOBS_STREAM, subject_for(stranded))
        assert (await js.get_last_msg(JOBS_STREAM, subject_for(later))).seq == 3
    finally:
        await client.close()
