"""Control-plane queries: publication bookkeeping, expired leases, stats, purge."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select
from storage_test_helpers import SECOND_US, claim, create, exited, running

from evalmesh_storage.db import Database
from evalmesh_storage.domain import Chunk, Priority, State, Stream, View
from evalmesh_storage.errors import EvaluationNotFound
from evalmesh_storage.models import evaluation_labels, output_chunks
from evalmesh_storage.storage import Storage


async def test_unpublished_lists_never_published_then_stale_publications(
    storage: Storage,
) -> None:
    first = await create(storage)
    second = await create(storage)
    running_one = await create(storage)
    await storage.claim(running_one.id, claim())
    assert [e.id for e in await storage.list_unpublished(None, 10)] == [first.id, second.id]
    assert await storage.record_publications([first.id, running_one.id, "ev_unknown"]) == 1
    assert [e.id for e in await storage.list_unpublished(None, 10)] == [second.id]
    published = await storage.get_evaluation(first.id, "", View.BASIC)
    assert published.publish_count == 1
    assert published.publish_time is not None
    later = published.publish_time + 1
    assert [e.id for e in await storage.list_unpublished(later, 10)] == [first.id, second.id]
    assert [e.id for e in await storage.list_unpublished(later, 1)] == [first.id]
    await storage.record_publications([first.id])
    again = await storage.get_evaluation(first.id, "", View.BASIC)
    assert again.publish_count == 2


async def test_expired_leases_are_found_on_the_database_clock(storage: Storage) -> None:
    short = await create(storage)
    await storage.claim(short.id, claim(lease_us=1))
    await running(storage)
    await asyncio.sleep(0.01)
    expired = await storage.list_expired_leases(0)
    assert [(e.id, e.attempt) for e in expired] == [(short.id, 1)]


async def test_queued_pages_walk_published_jobs_in_queue_order_to_the_end(
    storage: Storage,
) -> None:
    low = await create(storage, priority=Priority.LOW)
    normal = [await create(storage) for _ in range(3)]
    high = await create(storage, priority=Priority.HIGH, tenant="globex")
    never = await create(storage)
    held = await running(storage)
    await storage.record_publications([e.id for e in (low, *normal, high)])
    before = (await storage.get_evaluation(low.id, "", View.BASIC)).publish_time
    assert before is not None
    walked, token, pages = [], "", 0
    while True:
        page, token = await storage.list_queued(before + 1, 2, token)
        walked += [e.id for e in page]
        pages += 1
        if not token:
            break
    # HIGH first, then NORMAL oldest first, then LOW; never published and RUNNING left out.
    assert walked == [high.id, *(e.id for e in normal), low.id]
    assert pages == 3
    assert never.id not in walked
    assert held.id not in walked
    # Published after the bound: not yet due for a check.
    assert await storage.list_queued(before, 10, "") == ([], "")


async def test_leases_list_one_executors_running_evaluations_expired_or_not(
    storage: Storage,
) -> None:
    expired = await create(storage)
    await storage.claim(expired.id, claim("executor-a", lease_us=1))
    live = await create(storage)
    await storage.claim(live.id, claim("executor-a"))
    other = await create(storage)
    await storage.claim(other.id, claim("executor-b"))
    await asyncio.sleep(0.01)
    leases = await storage.list_leases("executor-a", 0)
    assert sorted((e.id, e.attempt) for e in leases) == sorted([(expired.id, 1), (live.id, 1)])
    assert await storage.list_leases("executor-c", 0) == []


async def test_stats_count_states_queue_depth_oldest_wait_and_recent_completions(
    storage: Storage,
) -> None:
    await create(storage, priority=Priority.HIGH)
    await create(storage, priority=Priority.HIGH)
    await create(storage, priority=Priority.LOW, tenant="globex")
    done = await running(storage)
    await storage.complete(done.id, 1, State.SUCCEEDED, exited(0))
    await running(storage)
    await asyncio.sleep(0.01)
    stats = await storage.stats("")
    assert stats.state_counts == {State.QUEUED: 3, State.RUNNING: 1, State.SUCCEEDED: 1}
    depth = {q.priority: q for q in stats.queued}
    assert (
        depth[Priority.HIGH].depth,
        depth[Priority.NORMAL].depth,
        depth[Priority.LOW].depth,
    ) == (
        2,
        0,
        1,
    )
    assert depth[Priority.HIGH].oldest_wait_us > 0
    assert depth[Priority.NORMAL].oldest_wait_us == 0
    assert stats.completed_last_minute == 1
    acme = await storage.stats("acme")
    assert acme.state_counts[State.QUEUED] == 2


async def test_purge_deletes_old_terminal_evaluations_with_their_output(
    storage: Storage, db: Database
) -> None:
    old = await running(storage, labels={"k": "v"})
    await storage.append_output(old.id, 1, [Chunk(Stream.STDOUT, 0, 0, b"bye")])
    done = await storage.complete(old.id, 1, State.SUCCEEDED, exited(0))
    queued = await create(storage)
    live = await running(storage)
    assert done.end_time is not None
    assert await storage.purge(done.end_time, 10) == 0  # strictly before
    assert await storage.purge(done.end_time + SECOND_US, 10) == 1
    try:
        await storage.get_evaluation(old.id, "", View.BASIC)
        raise AssertionError("purged evaluation still readable")
    except EvaluationNotFound:
        pass
    for evaluation in (queued, live):
        await storage.get_evaluation(evaluation.id, "", View.BASIC)

    def leftovers(tx: object) -> int:
        conn = tx.conn  # type: ignore[attr-defined]
        chunks = conn.scalar(select(func.count()).select_from(output_chunks))
        labels = conn.scalar(select(func.count()).select_from(evaluation_labels))
        return int(chunks) + int(labels)

    assert await db.read(leftovers) == 0


async def test_purge_works_in_bounded_batches(storage: Storage) -> None:
    ended = []
    for _ in range(5):
        evaluation = await create(storage)
        cancelled, _ = await storage.cancel("acme", evaluation.id, "")
        ended.append(cancelled)
    cutoff = max(e.end_time or 0 for e in ended) + 1
    assert await storage.purge(cutoff, 2) == 2
    assert await storage.purge(cutoff, 2) == 2
    assert await storage.purge(cutoff, 2) == 1
    assert await storage.purge(cutoff, 2) == 0
