"""Concurrent submits share storage calls; each still gets exactly its own answer.

The storage here is a stand-in that records its calls and answers when the test lets it, so the
test decides what arrives while a call is out. The real storage's answers for batches and
single creates are its own suites'; the submits' answers through a real mesh are in
test_scheduler_submit.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from evalmesh.storage.v1 import record_pb2, storage_service_pb2
from evalmesh.v1 import evaluation_pb2
from evalmesh_common import FailedPrecondition, Unavailable
from evalmesh_scheduler.creates import CreateBatcher
from evalmesh_scheduler.storage_client import Created

_Request = storage_service_pb2.CreateEvaluationRequest
SPEC = evaluation_pb2.EvaluationSpec(code="print(1)")


class HeldStorage:
    """Answers each call once ``release`` is set; records the calls; refuses a request_id
    listed in ``refused`` (and so any batch holding it), as storage refuses a reused one."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.called = asyncio.Event()
        self.release = asyncio.Event()
        self.refused: set[str] = set()
        self.down = False

    async def create(
        self, tenant: str, request_id: str, spec: evaluation_pb2.EvaluationSpec, new_id: str = ""
    ) -> Created:
        return (await self._answer([_Request(tenant=tenant, request_id=request_id, id=new_id)]))[0]

    async def batch_create(self, requests: Sequence[_Request]) -> list[Created]:
        return await self._answer(list(requests))

    async def _answer(self, requests: list[_Request]) -> list[Created]:
        self.calls.append([r.request_id for r in requests])
        self.called.set()
        await self.release.wait()
        if self.down:
            raise Unavailable("storage is away")
        if any(r.request_id in self.refused for r in requests):
            raise FailedPrecondition("request_id reused", reason="REQUEST_ID_REUSED")
        return [(_record(r), True) for r in requests]


def _record(request: _Request) -> record_pb2.EvaluationRecord:
    record = record_pb2.EvaluationRecord(tenant=request.tenant)
    record.evaluation.id = request.id or f"ev-{request.request_id}"
    return record


async def _settled(storage: HeldStorage, calls: int) -> None:
    """Until ``calls`` calls have reached storage."""
    while len(storage.calls) < calls:
        storage.called.clear()
        await storage.called.wait()


async def test_a_lone_create_is_one_single_call_made_at_once() -> None:
    storage = HeldStorage()
    storage.release.set()
    batcher = CreateBatcher(storage, max_batch=100)  # type: ignore[arg-type]
    record, created = await batcher.create("t", "alone", SPEC, "ev_given")
    assert (record.evaluation.id, created) == ("ev_given", True)
    assert storage.calls == [["alone"]]


async def test_creates_arriving_while_the_calls_are_out_go_together_in_one_call() -> None:
    storage = HeldStorage()
    batcher = CreateBatcher(storage, max_batch=100, in_flight=2)  # type: ignore[arg-type]
    first = []
    for i in range(2):  # each alone: a second call may go out while the first is out
        first.append(asyncio.ensure_future(batcher.create("t", f"r{i}", SPEC)))
        await _settled(storage, i + 1)
    later = [asyncio.ensure_future(batcher.create("t", f"r{i}", SPEC)) for i in range(2, 40)]
    await asyncio.sleep(0.01)
    assert len(storage.calls) == 2, "nothing more goes out while both calls are out"
    storage.release.set()
    results = await asyncio.gather(*first, *later)
    assert [record.evaluation.id for record, _ in results] == [f"ev-r{i}" for i in range(40)]
    assert storage.calls[:2] == [["r0"], ["r1"]]
    assert sorted(id_ for call in storage.calls[2:] for id_ in call) == sorted(
        f"r{i}" for i in range(2, 40)
    )
    assert len(storage.calls) <= 4, "the 38 that waited went in one or two calls"


async def test_a_batch_is_never_larger_than_the_limit() -> None:
    storage = HeldStorage()
    batcher = CreateBatcher(storage, max_batch=5, in_flight=1)  # type: ignore[arg-type]
    waiting = [asyncio.ensure_future(batcher.create("t", f"r{i}", SPEC)) for i in range(13)]
    storage.release.set()
    await asyncio.gather(*waiting)
    assert [len(call) for call in storage.calls] == [5, 5, 3]


async def test_a_refused_batch_gives_each_create_its_own_answer() -> None:
    storage = HeldStorage()
    storage.refused = {"reused"}
    batcher = CreateBatcher(storage, max_batch=100, in_flight=1)  # type: ignore[arg-type]
    out = asyncio.ensure_future(batcher.create("t", "first", SPEC))
    await _settled(storage, 1)
    fine = asyncio.ensure_future(batcher.create("t", "fine", SPEC))
    reused = asyncio.ensure_future(batcher.create("t", "reused", SPEC))
    storage.release.set()
    assert (await out)[0].evaluation.id == "ev-first"
    assert (await fine)[0].evaluation.id == "ev-fine"
    with pytest.raises(FailedPrecondition):
        await reused
    assert storage.calls[1] == ["fine", "reused"]
    assert sorted(storage.calls[2:]) == [["fine"], ["reused"]], "then each alone"


async def test_storage_away_fails_every_waiting_create_with_its_error() -> None:
    storage = HeldStorage()
    storage.down = True
    batcher = CreateBatcher(storage, max_batch=100, in_flight=1)  # type: ignore[arg-type]
    waiting = [asyncio.ensure_future(batcher.create("t", f"r{i}", SPEC)) for i in range(3)]
    storage.release.set()
    for each in waiting:
        with pytest.raises(Unavailable):
            await each
    assert storage.calls == [["r0", "r1", "r2"]], "not sent again one by one to wait as long"


async def test_a_create_whose_caller_went_away_leaves_the_others_answered() -> None:
    storage = HeldStorage()
    batcher = CreateBatcher(storage, max_batch=100, in_flight=1)  # type: ignore[arg-type]
    out = asyncio.ensure_future(batcher.create("t", "out", SPEC))
    await _settled(storage, 1)
    gone = asyncio.ensure_future(batcher.create("t", "gone", SPEC))
    stays = asyncio.ensure_future(batcher.create("t", "stays", SPEC))
    await asyncio.sleep(0)
    gone.cancel()
    storage.release.set()
    assert (await out)[0].evaluation.id == "ev-out"
    assert (await stays)[0].evaluation.id == "ev-stays"
    assert gone.cancelled()
    assert storage.calls[1] == ["gone", "stays"], "it is created all the same"
