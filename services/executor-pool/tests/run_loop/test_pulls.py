"""How an executor asks the work queue for jobs: pulls that find nothing are not repeated."""

from __future__ import annotations

import asyncio
import collections

from nats.aio.msg import Msg

from evalmesh_common.subjects import JOBS_STREAM, job_consumer

from .harness import Driver


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
