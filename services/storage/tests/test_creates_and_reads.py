"""Creating and reading evaluations: idempotency forever, tenant scoping, views, batches."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from storage_test_helpers import claim, create, new, spec

from evalmesh_common.ids import new_evaluation_id
from evalmesh_storage.creation import NewEvaluation
from evalmesh_storage.domain import Chunk, Priority, State, Stream, View
from evalmesh_storage.errors import EvaluationNotFound, InvalidArgument, RequestIdReused
from evalmesh_storage.storage import Storage


async def test_a_repeated_create_returns_the_same_evaluation(storage: Storage) -> None:
    request = new(request_id="retry-me")
    first, created = await storage.create_evaluation(request)
    again, created_again = await storage.create_evaluation(request)
    assert created
    assert not created_again
    assert again.id == first.id
    assert again.create_time == first.create_time
    assert first.state is State.QUEUED
    assert first.attempt == 0


async def test_a_create_given_an_id_makes_the_evaluation_under_it_unless_one_exists(
    storage: Storage,
) -> None:
    chosen = new_evaluation_id()
    made, created = await storage.create_evaluation(
        dataclasses.replace(new(request_id="chosen"), id=chosen)
    )
    assert (made.id, created) == (chosen, True)
    assert (await storage.get_evaluation(chosen, "acme", View.BASIC)).id == chosen
    # The request_id decides: a repeat proposing another id gets the evaluation made first.
    again, created = await storage.create_evaluation(
        dataclasses.replace(new(request_id="chosen"), id=new_evaluation_id())
    )
    assert (again.id, created) == (chosen, False)


async def test_a_create_given_an_id_not_of_the_evaluation_id_form_is_refused(
    storage: Storage,
) -> None:
    for bad in ("ev_short", "key_" + new_evaluation_id()[3:], new_evaluation_id().lower()):
        with pytest.raises(InvalidArgument):
            await storage.create_evaluation(dataclasses.replace(new(), id=bad))


async def test_concurrent_creates_with_one_request_id_make_one_evaluation(
    storage: Storage,
) -> None:
    request = new(request_id="racy")
    results = await asyncio.gather(*(storage.create_evaluation(request) for _ in range(20)))
    assert len({evaluation.id for evaluation, _ in results}) == 1
    assert sum(created for _, created in results) == 1


async def test_a_request_id_reused_with_another_spec_is_refused(storage: Storage) -> None:
    await storage.create_evaluation(new(request_id="once", code="print(1)"))
    with pytest.raises(RequestIdReused) as refused:
        await storage.create_evaluation(new(request_id="once", code="print(2)"))
    assert refused.value.reason == "REQUEST_ID_REUSED"


async def test_the_same_request_id_in_two_tenants_makes_two_evaluations(
    storage: Storage,
) -> None:
    a, _ = await storage.create_evaluation(new(tenant="acme", request_id="shared"))
    b, _ = await storage.create_evaluation(new(tenant="globex", request_id="shared"))
    assert a.id != b.id


async def test_label_order_does_not_change_the_spec_fingerprint() -> None:
    one = spec(labels={"a": "1", "b": "2"})
    two = dataclasses.replace(one, labels={"b": "2", "a": "1"})
    assert one.fingerprint() == two.fingerprint()
    assert one.fingerprint() != dataclasses.replace(one, stdin=b"x").fingerprint()


async def test_get_from_another_tenant_looks_like_a_missing_evaluation(storage: Storage) -> None:
    evaluation = await create(storage, tenant="acme")
    with pytest.raises(EvaluationNotFound):
        await storage.get_evaluation(evaluation.id, "globex", View.FULL)
    with pytest.raises(EvaluationNotFound):
        await storage.get_evaluation("ev_missing", "acme", View.FULL)
    assert (await storage.get_evaluation(evaluation.id, "", View.BASIC)).tenant == "acme"


async def test_basic_view_omits_code_stdin_and_output_and_full_includes_them(
    storage: Storage,
) -> None:
    request = NewEvaluation(
        "acme", "views", dataclasses.replace(spec("print('\x00ok')"), stdin=b"\xff\x00in")
    )
    evaluation, _ = await storage.create_evaluation(request)
    claimed = await storage.claim(evaluation.id, claim())
    await storage.append_output(
        claimed.id, 1, [Chunk(Stream.STDOUT, 0, 0, b"out"), Chunk(Stream.STDERR, 0, 0, b"err")]
    )
    basic = await storage.get_evaluation(evaluation.id, "acme", View.BASIC)
    full = await storage.get_evaluation(evaluation.id, "acme", View.FULL)
    assert (basic.spec.code, basic.spec.stdin, basic.stdout, basic.stderr) == ("", b"", None, None)
    assert basic.progress.stdout_bytes == 3
    assert full.spec.code == "print('\x00ok')"
    assert full.spec.stdin == b"\xff\x00in"
    assert (full.stdout, full.stderr) == (b"out", b"err")
    assert full.spec.labels == basic.spec.labels


async def test_labels_and_limits_round_trip(storage: Storage) -> None:
    evaluation = await create(storage, labels={"team": "ml", "run": "7"}, max_output_bytes=4096)
    stored = await storage.get_evaluation(evaluation.id, "acme", View.FULL)
    assert stored.spec.labels == {"team": "ml", "run": "7"}
    assert stored.spec.limits.max_output_bytes == 4096
    assert stored.spec.limits.memory_bytes is None
    assert stored.spec.priority is Priority.NORMAL


async def test_batch_create_is_idempotent_per_request_and_all_or_nothing(
    storage: Storage,
) -> None:
    batch = [new(request_id=f"b{i}") for i in range(3)]
    first = await storage.batch_create_evaluations(batch)
    assert [created for _, created in first] == [True, True, True]
    second = await storage.batch_create_evaluations([*batch, new(request_id="b3")])
    assert [e.id for e, _ in second[:3]] == [e.id for e, _ in first]
    assert [created for _, created in second] == [False, False, False, True]
    bad = [new(request_id="b4"), NewEvaluation("acme", "b0", spec("other code"))]
    with pytest.raises(RequestIdReused):
        await storage.batch_create_evaluations(bad)
    _, created = await storage.create_evaluation(bad[0])
    assert created, "the failed batch must not have created its first request"


async def test_unstorable_text_is_refused_as_invalid_argument(storage: Storage) -> None:
    with pytest.raises(InvalidArgument) as missing:
        await storage.create_evaluation(new(tenant=""))
    assert missing.value.violations[0].field == "tenant"
    with pytest.raises(InvalidArgument) as nul:
        await storage.create_evaluation(new(labels={"k": "v\x00"}))
    assert nul.value.violations[0].field.startswith("spec.labels")
    evaluation = await create(storage)
    with pytest.raises(InvalidArgument):
        await storage.cancel("acme", evaluation.id, "bad\x00reason")


async def test_a_queued_evaluation_reports_its_queue_position(storage: Storage) -> None:
    low = await create(storage, priority=Priority.LOW)
    first = await create(storage, priority=Priority.NORMAL)
    second = await create(storage, priority=Priority.NORMAL)
    high = await create(storage, priority=Priority.HIGH)

    async def position(evaluation_id: str) -> int | None:
        found = await storage.get_evaluation(evaluation_id, "acme", View.BASIC, True)
        return found.queue_position

    assert [await position(e.id) for e in (high, first, second, low)] == [0, 1, 2, 3]
    await storage.claim(high.id, claim())
    assert await position(first.id) == 0
    assert await position(high.id) is None
