"""Where a run's time went (the executor's moments placed on the database clock), and the
cluster's throughput and queue waits over a window, on both backends."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import update
from sqlalchemy.engine import Engine
from storage_test_helpers import SECOND_US, claim, create, exited, running

from evalmesh_storage.activity import summarize
from evalmesh_storage.domain import RunTimings, State, View
from evalmesh_storage.errors import InvalidArgument
from evalmesh_storage.models import evaluations
from evalmesh_storage.storage import Storage

MINUTE_US = 60 * SECOND_US


async def test_a_completion_places_the_executors_moments_after_the_claim_in_order(
    storage: Storage,
) -> None:
    evaluation = await running(storage)
    await asyncio.sleep(0.1)  # the run takes longer than the moments measured
    timings = RunTimings(sandbox_ready_us=20_000, program_ended_us=50_000, output_stored_us=60_000)
    done = await storage.complete(evaluation.id, 1, State.SUCCEEDED, exited(0), (), timings)
    assert done.start_time is not None
    assert done.end_time is not None
    start = done.start_time
    assert done.run_start_time == start + 20_000
    assert done.run_end_time == start + 50_000
    assert done.output_stored_time == start + 60_000
    assert done.output_stored_time <= done.end_time
    read = await storage.get_evaluation(evaluation.id, "acme", View.BASIC)
    assert (read.run_start_time, read.run_end_time) == (start + 20_000, start + 50_000)


async def test_output_stored_with_the_result_was_stored_when_the_result_was(
    storage: Storage,
) -> None:
    evaluation = await running(storage)
    timings = RunTimings(sandbox_ready_us=1_000, program_ended_us=2_000)
    done = await storage.complete(evaluation.id, 1, State.SUCCEEDED, exited(0), (), timings)
    assert done.output_stored_time == done.end_time


async def test_moments_are_never_later_than_the_result_nor_out_of_order(
    storage: Storage,
) -> None:
    evaluation = await running(storage)
    # An executor whose measurements overshoot (a claim answer that arrived late, say).
    timings = RunTimings(
        sandbox_ready_us=3_600 * SECOND_US,
        program_ended_us=SECOND_US,
        output_stored_us=7_200 * SECOND_US,
    )
    done = await storage.complete(evaluation.id, 1, State.FAILED, exited(1), (), timings)
    assert done.end_time is not None
    assert done.start_time is not None
    moments = [done.run_start_time, done.run_end_time, done.output_stored_time]
    assert moments == [done.end_time] * 3
    assert done.start_time <= done.end_time


async def test_without_timings_the_moments_stay_unset(storage: Storage) -> None:
    evaluation = await running(storage)
    done = await storage.complete(evaluation.id, 1, State.SUCCEEDED, exited(0))
    assert (done.run_start_time, done.run_end_time, done.output_stored_time) == (None,) * 3


async def test_a_new_attempt_starts_without_the_lost_attempts_moments(storage: Storage) -> None:
    evaluation = await create(storage)
    await storage.claim(evaluation.id, claim(lease_us=1))
    await asyncio.sleep(0.01)
    await storage.requeue(evaluation.id, 1, "lost")
    again = await storage.claim(evaluation.id, claim())
    assert again.attempt == 2
    assert (again.run_start_time, again.run_end_time, again.output_stored_time) == (None,) * 3


def test_wait_percentiles_are_waits_that_happened_by_nearest_rank() -> None:
    waits = list(range(1, 101))  # 1..100
    summary = summarize(waits)
    assert summary is not None
    assert (summary.count, summary.p50_us, summary.p90_us, summary.p99_us, summary.max_us) == (
        100,
        50,
        90,
        99,
        100,
    )
    assert summarize([]) is None
    single = summarize([7])
    assert single is not None
    assert (single.p50_us, single.p99_us, single.max_us) == (7, 7, 7)


async def test_activity_counts_claims_and_completions_per_bucket_with_their_waits(
    storage: Storage, engine: Engine
) -> None:
    finished = [await running(storage) for _ in range(3)]
    for item in finished:
        await storage.complete(item.id, 1, State.SUCCEEDED, exited(0))
    never_claimed = await create(storage)
    await storage.cancel("acme", never_claimed.id, "")  # completed, never started
    earlier = await running(storage)  # claimed 30 minutes ago after waiting 5 minutes
    now = (await storage.get_evaluation(earlier.id, "acme", View.BASIC)).start_time
    assert now is not None
    with engine.begin() as conn:
        conn.execute(
            update(evaluations)
            .where(evaluations.c.id == earlier.id)
            .values(create_time=now - 35 * MINUTE_US, start_time=now - 30 * MINUTE_US)
        )

    found = await storage.activity(60 * MINUTE_US, 60)
    assert len(found.buckets) == 60
    assert found.bucket_us == MINUTE_US
    assert found.end_time - found.start_time == 60 * MINUTE_US
    assert (found.started, found.completed) == (4, 4)
    assert found.wait is not None
    assert found.wait.count == 4
    assert found.wait.max_us == 5 * MINUTE_US
    assert found.wait.p50_us < SECOND_US * 10  # the three that started at once
    by_start = {b.start_time: b for b in found.buckets}
    old = by_start[max(t for t in by_start if t <= now - 30 * MINUTE_US)]
    assert old.started == 1
    assert old.completed == 0
    assert old.wait is not None
    assert old.wait.p50_us == 5 * MINUTE_US
    assert found.buckets[-1].started == 3
    assert found.buckets[-1].completed == 4
    assert sum(b.started for b in found.buckets) == found.started
    assert [b for b in found.buckets if b.started == 0 and b.wait is not None] == []

    recent = await storage.activity(10 * MINUTE_US, 10)
    assert (recent.started, recent.completed) == (3, 4)


async def test_activity_refuses_a_window_outside_its_bounds(storage: Storage) -> None:
    with pytest.raises(InvalidArgument):
        await storage.activity(SECOND_US, 60)
    with pytest.raises(InvalidArgument):
        await storage.activity(25 * 60 * MINUTE_US, 60)
    with pytest.raises(InvalidArgument):
        await storage.activity(None, 5000)
    default = await storage.activity(None, 0)
    assert (len(default.buckets), default.bucket_us) == (60, MINUTE_US)
