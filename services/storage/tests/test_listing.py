"""Listing: filters, stable newest-first order, and page tokens bound to tenant and filters."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from storage_test_helpers import claim, create, new

from evalmesh_storage.domain import Evaluation, Priority, State
from evalmesh_storage.errors import InvalidArgument, InvalidPageToken
from evalmesh_storage.evaluations import ListQuery
from evalmesh_storage.storage import Storage


async def list_all(storage: Storage, query: ListQuery) -> list[Evaluation]:
    found: list[Evaluation] = []
    token = ""
    while True:
        page = await storage.list_evaluations(dataclasses.replace(query, page_token=token))
        found.extend(page.items)
        token = page.next_page_token
        if not token:
            return found


def query(**options: object) -> ListQuery:
    return ListQuery(**{"tenant": "acme", **options})  # type: ignore[arg-type]


async def test_listing_is_newest_first_and_pages_cover_everything_once(storage: Storage) -> None:
    made = [await create(storage) for _ in range(7)]
    found = await list_all(storage, query(page_size=3))
    assert [e.id for e in found] == [
        e.id for e in sorted(made, key=lambda e: (e.create_time, e.id), reverse=True)
    ]
    assert {e.id for e in found} == {e.id for e in made}


async def test_pagination_never_skips_or_repeats_under_concurrent_inserts(
    storage: Storage,
) -> None:
    before = {(await create(storage)).id for _ in range(25)}
    seen: list[str] = []
    stop = asyncio.Event()

    async def insert_while_listing() -> None:
        while not stop.is_set():
            await create(storage)
            await asyncio.sleep(0)

    writer = asyncio.create_task(insert_while_listing())
    try:
        token = ""
        while True:
            page = await storage.list_evaluations(query(page_size=4, page_token=token))
            seen.extend(e.id for e in page.items)
            await asyncio.sleep(0.005)
            token = page.next_page_token
            if not token:
                break
    finally:
        stop.set()
        await writer
    assert len(seen) == len(set(seen)), "an evaluation was listed twice"
    assert before <= set(seen), "an evaluation that existed before listing was skipped"


async def test_a_page_token_from_one_tenant_is_useless_to_another(storage: Storage) -> None:
    for tenant in ("acme", "globex"):
        for _ in range(3):
            await create(storage, tenant=tenant)
    page = await storage.list_evaluations(query(page_size=1))
    assert page.next_page_token
    with pytest.raises(InvalidPageToken) as refused:
        await storage.list_evaluations(query(tenant="globex", page_token=page.next_page_token))
    assert refused.value.violations[0].field == "page_token"


async def test_a_page_token_is_refused_with_other_filters_or_when_tampered(
    storage: Storage,
) -> None:
    for _ in range(3):
        await create(storage)
    page = await storage.list_evaluations(query(page_size=1))
    token = page.next_page_token
    with pytest.raises(InvalidPageToken):
        await storage.list_evaluations(query(page_token=token, states=[State.QUEUED]))
    body, _, mac = token.partition(".")
    for forged in (f"{body}x.{mac}", f"{body}.{mac[:-2]}AA", "garbage", "é.é", ""):
        if forged:
            with pytest.raises(InvalidPageToken):
                await storage.list_evaluations(query(page_token=forged))
    other_size = await storage.list_evaluations(query(page_size=5, page_token=token))
    assert len(other_size.items) == 2


async def test_filters_by_state_priority_labels_and_create_time_combine(storage: Storage) -> None:
    high = await create(storage, priority=Priority.HIGH, labels={"team": "ml", "env": "prod"})
    await create(storage, priority=Priority.LOW, labels={"team": "ml", "env": "dev"})
    running = await create(storage, labels={"team": "web", "env": "prod"})
    await storage.claim(running.id, claim())
    await create(storage, tenant="globex", labels={"team": "ml", "env": "prod"})

    async def ids(**options: object) -> set[str]:
        return {e.id for e in await list_all(storage, query(**options))}

    assert await ids(labels={"team": "ml", "env": "prod"}) == {high.id}
    assert len(await ids(labels={"team": "ml"})) == 2
    assert await ids(states=[State.RUNNING]) == {running.id}
    assert await ids(priorities=[Priority.HIGH]) == {high.id}
    assert await ids(states=[State.QUEUED], priorities=[Priority.HIGH, Priority.NORMAL]) == {
        high.id
    }
    assert await ids(create_time_after=running.create_time) >= {running.id}
    assert high.id not in await ids(create_time_before=high.create_time)
    assert await ids(labels={"team": "nobody"}) == set()


async def test_page_size_defaults_to_fifty_and_is_capped_at_five_hundred(storage: Storage) -> None:
    await storage.batch_create_evaluations([new() for _ in range(520)])
    assert len((await storage.list_evaluations(query())).items) == 50
    assert len((await storage.list_evaluations(query(page_size=10_000))).items) == 500
    with pytest.raises(InvalidArgument):
        await storage.list_evaluations(query(page_size=-1))


async def test_listing_needs_a_tenant(storage: Storage) -> None:
    with pytest.raises(InvalidArgument):
        await storage.list_evaluations(query(tenant=""))
