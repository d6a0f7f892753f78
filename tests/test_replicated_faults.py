"""Every component replicated, one of each killed under load: nothing lost, doubled or invented.

Three NATS servers in one JetStream cluster (streams and buckets at R3), two storage instances on
one PostgreSQL, two schedulers (one leads the reconciler and reaper), two executor pools, two
gateways behind one Envoy edge. A steady load of evaluations runs through the edge while one NATS
server (the work queue's leader), one gateway, the leading scheduler, one storage instance and one
executor are killed with SIGKILL, one at a time, and started again. Then every accepted
evaluation must have ended exactly once with its own right output, every watcher must have seen
it end, the other scheduler must have taken the lease within its TTL, the killed executor's runs
must have been requeued by the new leader's reaper within the executor lease, and the cluster
must be healthy again. The figures (evaluations in flight at each kill, time to recover) are
printed and written to ``replicated-faults.json`` in the test's directory.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from evalmesh.client import AsyncClient, RetryPolicy, State
from evalmesh_testing.postgres import PostgresCluster, find_postgres_bin
from evalmesh_testing.replicated import ReplicatedMesh
from tests.replicated_load import Ledger, Load, verify

pytestmark = pytest.mark.slow

LEADER_TTL = 6.0
LEASE = 6.0
REAP_INTERVAL = 1.0
ENV = {
    "EVALMESH_LEADER_TTL": f"{LEADER_TTL:g}",
    "EVALMESH_EXECUTOR_LEASE": f"{LEASE:g}",
    "EVALMESH_REAP_INTERVAL": f"{REAP_INTERVAL:g}",
    "EVALMESH_RECONCILE_INTERVAL": "1",
    "EVALMESH_PRESENCE_CHECK_AFTER": "3",
    "EVALMESH_REQUEUE_BACKOFF_BASE": "0.5",
    "EVALMESH_REQUEUE_BACKOFF_CAP": "2",
    "EVALMESH_SANDBOX_BACKEND": "bwrap",
    "EVALMESH_PAGE_TOKEN_SECRET": "replicated-faults-test-page-secret",
}
REPLICAS = {"storage": 2, "scheduler": 2, "executor-pool": 2, "gateway": 2}
RATE = 3.0  # evaluations submitted per second, each running for about a second
DOWN = 2.0  # seconds a killed member stays down (the executor: past its lease)


@dataclasses.dataclass
class Fault:
    """One kill and what it cost."""

    name: str
    in_flight: int = 0
    # Watch streams open at the kill; each had to resume (through the other gateway, or after
    # its gateway lost NATS or storage) and see its evaluation end.
    watching: int = 0
    # From the kill to the end of the first evaluation submitted after it (HIGH priority).
    recovered: float = 0.0
    # From the kill until every member was SERVING and NATS and the edge healthy again.
    healthy_again: float = 0.0
    # Scheduler: until the other one held the lease. Executor: until its runs were requeued.
    takeover: float | None = None


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    if find_postgres_bin() is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) are not installed")
    with PostgresCluster() as cluster:
        yield cluster.create_database("replicated")


@pytest.fixture
def mesh(tmp_path: Path, postgres_url: str) -> Iterator[ReplicatedMesh]:
    with ReplicatedMesh(tmp_path / "mesh", postgres_url, REPLICAS, ENV) as running:
        yield running


async def _until(check: Callable[[], Awaitable[bool]], within: float, what: str) -> float:
    start = time.monotonic()
    while not await check():
        assert time.monotonic() - start < within, f"{what} not within {within:g} s"
        await asyncio.sleep(0.1)
    return time.monotonic() - start


class Campaign:
    """The load, and the faults it runs through."""

    def __init__(self, mesh: ReplicatedMesh, client: AsyncClient) -> None:
        self.mesh = mesh
        self.client = client
        self.ledger = Ledger()
        self.load = Load(client, self.ledger, RATE, sleep=1.0)
        self.faults: list[Fault] = []

    async def in_flight(self) -> int:
        states = [State.QUEUED, State.RUNNING]
        return len([e async for e in self.client.list(state=states, page_size=500)])

    async def probe(self, since: float) -> float:
        """Seconds from ``since`` until a new HIGH priority evaluation ended."""
        request = self.ledger.new(0.0, priority="high", watched=True)
        await self.load.submit(request)

        async def ended() -> bool:
            return request.ended_at is not None

        await _until(ended, 120, "the probe's end")
        assert request.ended_at is not None
        return request.ended_at - since

    def watching(self) -> int:
        return sum(
            1
            for request in self.ledger.requests.values()
            if request.watched and request.evaluation_id and request.ended_at is None
        )

    async def healthy(self) -> bool:
        return await asyncio.to_thread(self.mesh.healthy)

    async def hurt(
        self, name: str, kill: Callable[[], None], heal: Callable[[Fault, float], Awaitable[None]]
    ) -> Fault:
        """Kill, probe, heal, and wait until the whole cluster is healthy again."""
        fault = Fault(name, in_flight=await self.in_flight(), watching=self.watching())
        killed = time.monotonic()
        await asyncio.to_thread(kill)
        probe = asyncio.create_task(self.probe(killed))
        await heal(fault, killed)
        fault.recovered = await probe
        await _until(self.healthy, 120, f"health after {name}")
        fault.healthy_again = time.monotonic() - killed
        self.faults.append(fault)
        return fault

    def restart_after(
        self, component: str, index: int, down: float
    ) -> Callable[..., Awaitable[None]]:
        async def heal(fault: Fault, killed: float) -> None:
            await asyncio.sleep(max(0.0, killed + down - time.monotonic()))
            await asyncio.to_thread(self.mesh.restart, component, index)

        return heal


async def _nats_member(campaign: Campaign) -> Fault:
    mesh = campaign.mesh
    index = await asyncio.to_thread(mesh.stream_leader, "EVALMESH_JOBS")

    async def heal(fault: Fault, killed: float) -> None:
        await asyncio.sleep(DOWN)
        await asyncio.to_thread(mesh.nats.start_member, index)

    return await campaign.hurt("nats (work-queue leader)", lambda: mesh.nats.kill(index), heal)


async def _gateway(campaign: Campaign) -> Fault:
    mesh = campaign.mesh
    heal = campaign.restart_after("gateway", 0, DOWN)
    return await campaign.hurt("gateway", lambda: mesh.kill("gateway", 0), heal)


async def _leader(campaign: Campaign) -> Fault:
    mesh = campaign.mesh
    old = await asyncio.to_thread(mesh.leader)
    assert old in (0, 1), "no scheduler leads"

    async def heal(fault: Fault, killed: float) -> None:
        async def other_leads() -> bool:
            return await asyncio.to_thread(mesh.leader) == 1 - old

        await _until(other_leads, LEADER_TTL * 2, "the other scheduler's takeover")
        fault.takeover = time.monotonic() - killed
        await asyncio.to_thread(mesh.restart, "scheduler", old)

    return await campaign.hurt("scheduler (leader)", lambda: mesh.kill("scheduler", old), heal)


async def _storage(campaign: Campaign) -> Fault:
    mesh = campaign.mesh
    heal = campaign.restart_after("storage", 0, DOWN)
    return await campaign.hurt("storage", lambda: mesh.kill("storage", 0), heal)


async def _executor(campaign: Campaign) -> Fault:
    mesh = campaign.mesh
    gone = mesh.member("executor-pool", 0).name  # its EVALMESH_INSTANCE_ID

    async def held_by_gone() -> int:
        running = campaign.client.list(state=[State.RUNNING], page_size=500)
        return len([e async for e in running if e.executor_id == gone])

    async def holds_some() -> bool:
        return await held_by_gone() > 0

    async def reaped() -> bool:
        return await held_by_gone() == 0

    async def heal(fault: Fault, killed: float) -> None:
        # Down past its lease, so the leader's reaper (not the executor's own restart under
        # its identity) frees what it held.
        await _until(reaped, LEASE * 3, "the reaper's requeue of the killed executor's runs")
        fault.takeover = time.monotonic() - killed
        await asyncio.sleep(max(0.0, killed + LEASE + 1 - time.monotonic()))
        await asyncio.to_thread(mesh.restart, "executor-pool", 0)

    await _until(holds_some, 30, "a run on the executor to kill")
    return await campaign.hurt("executor-pool", lambda: mesh.kill("executor-pool", 0), heal)


def _report(campaign: Campaign, directory: Path, accepted: int, retried: int) -> str:
    rows = [
        f"| {f.name} | {f.in_flight} | {f.watching} | {f.recovered:.1f} s | "
        f"{f.healthy_again:.1f} s | "
        + (f"{f.takeover:.1f} s |" if f.takeover is not None else "- |")
        for f in campaign.faults
    ]
    table = "\n".join(
        [
            f"accepted {accepted}, run again after a fault {retried}",
            "| killed | in flight | watching | recovered | healthy again | taken over |",
            "|---|---|---|---|---|---|",
            *rows,
        ]
    )
    figures = {"accepted": accepted, "retried": retried}
    faults = [dataclasses.asdict(fault) for fault in campaign.faults]
    (directory / "replicated-faults.json").write_text(json.dumps({**figures, "faults": faults}))
    return table


async def test_one_of_each_killed_under_load_loses_doubles_and_invents_nothing(
    mesh: ReplicatedMesh, tmp_path: Path
) -> None:
    retry = RetryPolicy(max_attempts=8, max_backoff=1.0)
    async with AsyncClient(mesh.edge_address, mesh.admin_api_key, retry=retry) as client:
        campaign = Campaign(mesh, client)
        stop = asyncio.Event()
        load = asyncio.create_task(campaign.load.run(stop))
        await asyncio.sleep(5)
        for fault in (_nats_member, _gateway, _leader, _storage, _executor):
            await fault(campaign)
            await asyncio.sleep(3)
        stop.set()
        await load
        await campaign.load.finish(within=180)
        verdict = await verify(client, campaign.ledger)
    print(_report(campaign, tmp_path, verdict.accepted, verdict.retried))
    assert verdict.clean, verdict
    assert verdict.accepted >= RATE * 30
    by_name = {fault.name: fault for fault in campaign.faults}
    takeover = by_name["scheduler (leader)"].takeover
    assert takeover is not None
    assert takeover <= LEADER_TTL + LEADER_TTL / 3 + 2
    reaped = by_name["executor-pool"].takeover
    assert reaped is not None
    assert reaped <= LEASE + 2 * REAP_INTERVAL + 3
    assert verdict.retried >= 1  # the killed executor's runs ran again, elsewhere
