"""The tenant share on a real mesh: a tenant past its share yields the pool to another that
waits, a hard cap holds, and a job sent to the back of the queue is neither lost nor retried
(every evaluation runs once, at attempt 1)."""

from __future__ import annotations

import itertools

import pytest

from evalmesh.v1 import evaluation_pb2

from .conftest import MakeMesh
from .harness import Driver

pytestmark = pytest.mark.slow

State = evaluation_pb2.Evaluation.State
NAP = "import time; time.sleep({seconds})"


def _by_start(evaluations: list[evaluation_pb2.Evaluation]) -> list[evaluation_pb2.Evaluation]:
    return sorted(evaluations, key=lambda e: e.start_time.ToNanoseconds())


def _ran_once(evaluations: list[evaluation_pb2.Evaluation]) -> None:
    assert [State.Name(e.state) for e in evaluations] == ["STATE_SUCCEEDED"] * len(evaluations)
    assert {e.attempt for e in evaluations} == {1}


async def test_a_tenant_past_its_fair_share_yields_the_pool_to_another_that_waits(
    make_mesh: MakeMesh,
) -> None:
    mesh = make_mesh({})
    async with Driver(mesh) as driver:
        # The whole backlog is queued before any executor: acme's six jobs are ahead of
        # globex's two. Without a share, globex would start seventh and eighth.
        tenants = {}
        for _ in range(6):
            tenants[await driver.submit(NAP.format(seconds=1), tenant="acme")] = "acme"
        for _ in range(2):
            tenants[await driver.submit(NAP.format(seconds=1), tenant="globex")] = "globex"
        mesh.executor({"EVALMESH_EXECUTOR_SLOTS": "2", "EVALMESH_TENANT_FAIR_SHARE": "0.5"})
        finished = [await driver.wait_terminal(i, within=60) for i in tenants]
    _ran_once(finished)
    order = [tenants[e.id] for e in _by_start(finished)]
    assert order[:4].count("globex") == 2, order


async def test_a_tenant_never_runs_more_than_its_cap_even_on_an_idle_pool(
    make_mesh: MakeMesh,
) -> None:
    mesh = make_mesh({})
    async with Driver(mesh) as driver:
        ids = [await driver.submit(NAP.format(seconds=0.5), tenant="acme") for _ in range(4)]
        mesh.executor({"EVALMESH_EXECUTOR_SLOTS": "2", "EVALMESH_TENANT_MAX_RUNNING": "1"})
        finished = _by_start([await driver.wait_terminal(i, within=60) for i in ids])
    _ran_once(finished)
    for earlier, later in itertools.pairwise(finished):
        assert later.start_time.ToNanoseconds() >= earlier.end_time.ToNanoseconds()


async def test_a_lone_tenant_fills_an_idle_pool_past_its_fair_share(make_mesh: MakeMesh) -> None:
    mesh = make_mesh({})
    async with Driver(mesh) as driver:
        ids = [await driver.submit(NAP.format(seconds=1), tenant="acme") for _ in range(2)]
        mesh.executor({"EVALMESH_EXECUTOR_SLOTS": "2", "EVALMESH_TENANT_FAIR_SHARE": "0.5"})
        first, second = _by_start([await driver.wait_terminal(i, within=60) for i in ids])
    _ran_once([first, second])
    assert second.start_time.ToNanoseconds() < first.end_time.ToNanoseconds()
