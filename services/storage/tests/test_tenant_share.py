"""The tenant share checked at claim time, on both backends: a hard cap, and a work-conserving
fair share that only binds while another tenant below its own share is waiting."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from storage_test_helpers import claim, create, exited

from evalmesh_storage.domain import Evaluation, State, TenantShare, View
from evalmesh_storage.errors import InvalidArgument, TenantAtLimit
from evalmesh_storage.state_machine import Claim
from evalmesh_storage.storage import Storage


def _share(max_running: int = 0, fair_running: int = 0, executor: str = "executor-1") -> Claim:
    return dataclasses.replace(
        claim(executor=executor),
        tenant_share=TenantShare(max_running=max_running, fair_running=fair_running),
    )


async def _run(storage: Storage, tenant: str, n: int) -> list[Evaluation]:
    started = []
    for _ in range(n):
        evaluation = await create(storage, tenant)
        started.append(await storage.claim(evaluation.id, claim()))
    return started


async def test_a_claim_past_the_tenants_cap_is_refused_and_leaves_the_evaluation_queued(
    storage: Storage,
) -> None:
    first, _second = await _run(storage, "acme", 2)
    waiting = await create(storage, "acme")
    with pytest.raises(TenantAtLimit) as refused:
        await storage.claim(waiting.id, _share(max_running=2))
    assert refused.value.reason == "TENANT_AT_LIMIT"
    assert refused.value.metadata["running"] == "2"
    stored = await storage.get_evaluation(waiting.id, "acme", View.BASIC)
    assert stored.state is State.QUEUED
    assert stored.attempt == 0

    await storage.complete(first.id, 1, State.SUCCEEDED, exited(0))
    claimed = await storage.claim(waiting.id, _share(max_running=2))
    assert claimed.state is State.RUNNING


async def test_the_cap_counts_only_the_claiming_tenant(storage: Storage) -> None:
    await _run(storage, "acme", 2)
    other = await create(storage, "globex")
    claimed = await storage.claim(other.id, _share(max_running=2))
    assert claimed.state is State.RUNNING


async def test_a_lone_tenant_may_run_past_its_fair_share_on_an_idle_pool(
    storage: Storage,
) -> None:
    await _run(storage, "acme", 3)
    more = await create(storage, "acme")
    claimed = await storage.claim(more.id, _share(fair_running=2))
    assert claimed.state is State.RUNNING


async def test_past_its_fair_share_a_tenant_yields_to_another_that_waits(
    storage: Storage,
) -> None:
    await _run(storage, "acme", 2)
    more = await create(storage, "acme")
    waiting = await create(storage, "globex")
    with pytest.raises(TenantAtLimit):
        await storage.claim(more.id, _share(fair_running=2))
    claimed = await storage.claim(waiting.id, _share(fair_running=2))
    assert claimed.tenant == "globex"
    # Nobody else waits now: acme may take the free place again.
    again = await storage.claim(more.id, _share(fair_running=2))
    assert again.state is State.RUNNING


async def test_a_waiting_tenant_already_at_its_own_share_does_not_hold_others_back(
    storage: Storage,
) -> None:
    # Both run their fair share and both have more queued: refusing both would leave the
    # free place idle, so the one that asks gets it.
    await _run(storage, "acme", 2)
    await _run(storage, "globex", 2)
    await create(storage, "globex")
    more = await create(storage, "acme")
    claimed = await storage.claim(more.id, _share(fair_running=2))
    assert claimed.state is State.RUNNING


async def test_concurrent_claims_of_one_tenant_never_exceed_its_cap(storage: Storage) -> None:
    evaluations = [await create(storage, "acme") for _ in range(12)]

    async def try_claim(evaluation: Evaluation, n: int) -> bool:
        try:
            await storage.claim(evaluation.id, _share(max_running=3, executor=f"executor-{n}"))
        except TenantAtLimit:
            return False
        return True

    won = await asyncio.gather(*(try_claim(e, n) for n, e in enumerate(evaluations)))
    assert sum(won) == 3
    stats = await storage.stats("acme")
    assert stats.state_counts[State.RUNNING] == 3


async def test_a_negative_share_is_an_invalid_argument(storage: Storage) -> None:
    evaluation = await create(storage, "acme")
    with pytest.raises(InvalidArgument):
        await storage.claim(evaluation.id, _share(max_running=-1))


def _ending(fair_running: int, ending: list[Evaluation]) -> Claim:
    return dataclasses.replace(
        claim(),
        tenant_share=TenantShare(fair_running=fair_running, ending=tuple(e.id for e in ending)),
    )


async def test_another_tenants_run_whose_sandbox_is_gone_does_not_count_toward_its_share(
    storage: Storage,
) -> None:
    # globex's one run has ended in its sandbox, its result not yet recorded: globex holds no
    # place, so acme (at its share of 1) yields to globex's waiting work.
    await _run(storage, "acme", 1)
    (finishing,) = await _run(storage, "globex", 1)
    await create(storage, "globex")
    more = await create(storage, "acme")
    with pytest.raises(TenantAtLimit):
        await storage.claim(more.id, _ending(1, [finishing]))
    claimed = await storage.claim(more.id, _ending(1, []))  # globex still counts as running
    assert claimed.state is State.RUNNING


async def test_a_tenants_own_run_whose_sandbox_is_gone_frees_its_place(storage: Storage) -> None:
    (finishing,) = await _run(storage, "acme", 1)
    await create(storage, "globex")
    more = await create(storage, "acme")
    with pytest.raises(TenantAtLimit):
        await storage.claim(more.id, _ending(1, []))
    claimed = await storage.claim(more.id, _ending(1, [finishing]))
    assert claimed.state is State.RUNNING


async def test_the_cap_counts_runs_whose_sandbox_is_gone_until_their_result_is_recorded(
    storage: Storage,
) -> None:
    (finishing,) = await _run(storage, "acme", 1)
    more = await create(storage, "acme")
    share = TenantShare(max_running=1, fair_running=1, ending=(finishing.id,))
    with pytest.raises(TenantAtLimit):
        await storage.claim(more.id, dataclasses.replace(claim(), tenant_share=share))


async def test_an_ending_list_past_any_executors_slots_is_an_invalid_argument(
    storage: Storage,
) -> None:
    evaluation = await create(storage, "acme")
    share = TenantShare(fair_running=1, ending=tuple(f"e{n}" for n in range(1001)))
    with pytest.raises(InvalidArgument):
        await storage.claim(evaluation.id, dataclasses.replace(claim(), tenant_share=share))
