"""The state machine under concurrency, on both backends: fenced, absorbing, exactly-once claims."""

from __future__ import annotations

import asyncio

import pytest
from storage_test_helpers import SECOND_US, claim, create, exited, running

from evalmesh_storage.domain import Fault, Result, State, TerminationCause, View
from evalmesh_storage.errors import (
    AlreadyClaimed,
    AlreadyTerminal,
    EvaluationNotFound,
    InvalidArgument,
    LeaseNotExpired,
    StaleAttempt,
)
from evalmesh_storage.storage import Storage


async def test_twenty_concurrent_claimers_exactly_one_wins(storage: Storage) -> None:
    evaluation = await create(storage)

    async def try_claim(n: int) -> str | None:
        try:
            won = await storage.claim(evaluation.id, claim(executor=f"executor-{n}"))
        except AlreadyClaimed:
            return None
        return won.executor_id

    winners = [w for w in await asyncio.gather(*(try_claim(n) for n in range(20))) if w]
    assert len(winners) == 1
    stored = await storage.get_evaluation(evaluation.id, "acme", View.BASIC)
    assert stored.state is State.RUNNING
    assert stored.attempt == 1
    assert stored.executor_id == winners[0]


async def test_claim_sets_attempt_lease_on_database_clock_and_returns_full_spec(
    storage: Storage,
) -> None:
    evaluation = await create(storage, code="print(42)")
    claimed = await storage.claim(evaluation.id, claim(lease_us=10 * SECOND_US))
    assert claimed.attempt == 1
    assert claimed.spec.code == "print(42)"
    assert claimed.start_time is not None
    assert claimed.lease_expire_time is not None
    assert claimed.lease_expire_time == claimed.start_time + 10 * SECOND_US
    assert claimed.runtime_digest == "sha256:abc"
    assert claimed.applied_limits is not None
    assert claimed.applied_limits.max_output_bytes == 1024
    assert claimed.runtime == "python"


async def test_claiming_a_terminal_evaluation_is_refused_as_already_terminal(
    storage: Storage,
) -> None:
    evaluation = await running(storage)
    await storage.complete(evaluation.id, 1, State.SUCCEEDED, exited(0))
    with pytest.raises(AlreadyTerminal):
        await storage.claim(evaluation.id, claim())


async def test_stale_attempt_writes_are_refused_after_a_requeue_and_reclaim(
    storage: Storage,
) -> None:
    evaluation = await create(storage)
    await storage.claim(evaluation.id, claim(lease_us=1))
    await asyncio.sleep(0.01)
    await storage.requeue(evaluation.id, 1, "executor lost")
    second = await storage.claim(evaluation.id, claim(executor="executor-2"))
    assert second.attempt == 2
    with pytest.raises(StaleAttempt) as renew:
        await storage.renew_lease(evaluation.id, 1, SECOND_US)
    assert renew.value.reason == "STALE_ATTEMPT"
    with pytest.raises(StaleAttempt):
        await storage.complete(evaluation.id, 1, State.SUCCEEDED, exited(0))
    with pytest.raises(StaleAttempt):
        await storage.requeue(evaluation.id, 1, "again")
    done = await storage.complete(evaluation.id, 2, State.FAILED, exited(3))
    assert done.state is State.FAILED
    assert done.attempt == 2


async def test_writes_of_a_requeued_attempt_are_refused_before_anyone_reclaims(
    storage: Storage,
) -> None:
    evaluation = await create(storage)
    await storage.claim(evaluation.id, claim(lease_us=1))
    await asyncio.sleep(0.01)
    await storage.requeue(evaluation.id, 1, "lease expired")
    with pytest.raises(StaleAttempt):
        await storage.complete(evaluation.id, 1, State.SUCCEEDED, exited(0))


async def test_terminal_state_never_changes_under_concurrent_completions(
    storage: Storage,
) -> None:
    evaluation = await running(storage)
    states = [State.SUCCEEDED, State.FAILED, State.TIMED_OUT, State.ERROR] * 3

    async def complete(state: State) -> State | None:
        try:
            return (await storage.complete(evaluation.id, 1, state, exited(0))).state
        except AlreadyTerminal:
            return None

    results = [r for r in await asyncio.gather(*(complete(s) for s in states)) if r]
    assert len(results) == 1
    stored = await storage.get_evaluation(evaluation.id, "acme", View.BASIC)
    assert stored.state is results[0]
    with pytest.raises(AlreadyTerminal) as again:
        await storage.complete(evaluation.id, 1, State.SUCCEEDED, exited(0))
    assert again.value.reason == "ALREADY_TERMINAL"
    cancelled, before = await storage.cancel("acme", evaluation.id, "too late")
    assert before is results[0]
    assert cancelled.state is results[0]
    assert not cancelled.cancel_requested


async def test_complete_stores_the_result_and_clears_the_lease(storage: Storage) -> None:
    evaluation = await running(storage)
    done = await storage.complete(evaluation.id, 1, State.FAILED, exited(3))
    assert done.state is State.FAILED
    assert done.lease_expire_time is None
    assert done.end_time is not None
    assert done.result is not None
    assert (done.result.cause, done.result.fault, done.result.exit_code) == (
        TerminationCause.EXITED,
        Fault.USER,
        3,
    )
    assert done.result.wall_time_us == SECOND_US


async def test_complete_refuses_a_non_terminal_state(storage: Storage) -> None:
    evaluation = await running(storage)
    with pytest.raises(InvalidArgument):
        await storage.complete(evaluation.id, 1, State.QUEUED, exited(0))


async def test_renew_extends_the_lease_and_reports_a_cancel_request(storage: Storage) -> None:
    evaluation = await running(storage)
    first, asked = await storage.renew_lease(evaluation.id, 1, 60 * SECOND_US)
    assert not asked
    assert evaluation.lease_expire_time is not None
    assert first > evaluation.lease_expire_time
    await storage.cancel("acme", evaluation.id, "stop")
    _, asked = await storage.renew_lease(evaluation.id, 1, 60 * SECOND_US)
    assert asked


async def test_cancel_of_a_queued_evaluation_ends_it_at_once(storage: Storage) -> None:
    evaluation = await create(storage)
    cancelled, before = await storage.cancel("acme", evaluation.id, "changed my mind")
    assert before is State.QUEUED
    assert cancelled.state is State.CANCELLED
    assert cancelled.end_time is not None
    assert cancelled.result is not None
    assert cancelled.result.cause is TerminationCause.CANCELLED
    assert cancelled.cancel_reason == "changed my mind"
    with pytest.raises(AlreadyTerminal):
        await storage.claim(evaluation.id, claim())


async def test_cancel_of_a_running_evaluation_makes_its_completion_cancelled(
    storage: Storage,
) -> None:
    evaluation = await running(storage)
    marked, before = await storage.cancel("acme", evaluation.id, "stop")
    assert before is State.RUNNING
    assert marked.state is State.RUNNING
    assert marked.cancel_requested
    again, _ = await storage.cancel("acme", evaluation.id, "second note")
    assert again.cancel_reason == "stop"
    done = await storage.complete(evaluation.id, 1, State.SUCCEEDED, exited(0))
    assert done.state is State.CANCELLED
    assert done.result is not None
    assert done.result.cause is TerminationCause.CANCELLED
    assert done.result.fault is Fault.USER


async def test_cancel_from_another_tenant_looks_like_a_missing_evaluation(
    storage: Storage,
) -> None:
    evaluation = await create(storage, tenant="acme")
    with pytest.raises(EvaluationNotFound):
        await storage.cancel("globex", evaluation.id, "")
    stored = await storage.get_evaluation(evaluation.id, "acme", View.BASIC)
    assert stored.state is State.QUEUED


async def test_requeue_after_an_expired_lease_returns_it_to_the_queue(storage: Storage) -> None:
    evaluation = await create(storage)
    await storage.record_publications([evaluation.id])
    await storage.claim(evaluation.id, claim(lease_us=1))
    await asyncio.sleep(0.01)
    expired = await storage.list_expired_leases(10)
    assert [e.id for e in expired] == [evaluation.id]
    requeued = await storage.requeue(evaluation.id, 1, "executor lost")
    assert requeued.state is State.QUEUED
    assert requeued.attempt == 1
    assert requeued.lease_expire_time is None
    assert requeued.publish_time is None
    assert await storage.list_expired_leases(10) == []
    again = await storage.claim(evaluation.id, claim())
    assert again.attempt == 2


async def test_requeue_is_refused_while_the_lease_holds(storage: Storage) -> None:
    evaluation = await running(storage)
    with pytest.raises(LeaseNotExpired):
        await storage.requeue(evaluation.id, 1, "impatient")
    assert await storage.list_expired_leases(10) == []


async def test_requeue_of_a_cancel_requested_evaluation_ends_it_cancelled(
    storage: Storage,
) -> None:
    evaluation = await create(storage)
    await storage.claim(evaluation.id, claim(lease_us=1))
    await storage.cancel("acme", evaluation.id, "stop")
    await asyncio.sleep(0.01)
    ended = await storage.requeue(evaluation.id, 1, "executor lost")
    assert ended.state is State.CANCELLED


async def test_concurrent_requeues_of_one_expired_attempt_requeue_it_once(
    storage: Storage,
) -> None:
    evaluation = await create(storage)
    await storage.claim(evaluation.id, claim(lease_us=1))
    await asyncio.sleep(0.01)

    async def requeue() -> bool:
        try:
            await storage.requeue(evaluation.id, 1, "reaper")
        except StaleAttempt:
            return False
        return True

    assert sum(await asyncio.gather(*(requeue() for _ in range(10)))) == 1


async def test_platform_error_result_is_kept_as_given(storage: Storage) -> None:
    evaluation = await running(storage)
    result = Result(
        cause=TerminationCause.MAX_ATTEMPTS, fault=Fault.PLATFORM, detail="gave up\x00 after 3"
    )
    done = await storage.complete(evaluation.id, 1, State.ERROR, result)
    assert done.result is not None
    assert done.result.fault is Fault.PLATFORM
    assert "\x00" not in done.result.detail


async def test_the_platform_can_give_up_on_a_queued_evaluation_with_error(storage: Storage) -> None:
    evaluation = await create(storage)
    result = Result(cause=TerminationCause.MAX_ATTEMPTS, fault=Fault.PLATFORM, detail="dead letter")
    done = await storage.complete(evaluation.id, 0, State.ERROR, result)
    assert done.state is State.ERROR
    with pytest.raises(AlreadyTerminal):
        await storage.complete(evaluation.id, 0, State.ERROR, result)


async def test_a_queued_evaluation_cannot_be_completed_as_anything_but_error(
    storage: Storage,
) -> None:
    evaluation = await create(storage)
    with pytest.raises(StaleAttempt):
        await storage.complete(evaluation.id, 0, State.SUCCEEDED, exited(0))
    with pytest.raises(StaleAttempt):
        await storage.complete(evaluation.id, 1, State.ERROR, exited(0))
