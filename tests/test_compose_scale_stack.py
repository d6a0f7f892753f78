"""docker-compose.scale.yml for real: the replicated topology up on one engine, one of each
killed under load, nothing lost, doubled or invented.

The images are scripts/images' (cached after the first build); the stack is a compose project of
its own. A small steady load of evaluations runs through the edge (gRPC over its TLS port, with
the first admin key) while the JetStream work queue's leading NATS server, a gateway, the
scheduler holding the leader lease, a storage instance and an executor pool are killed with
SIGKILL (``docker kill``), one at a time, and started again. Then every accepted evaluation must
have ended exactly once with its own output (tests/replicated_load.py), and every watcher must
have seen it end. The figures are printed. Slow: CI runs it, `scripts/test -m 'not slow'` skips it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from evalmesh.client import AsyncClient, EvalmeshError, RetryPolicy, State
from evalmesh_testing.docker_engine import Engine, engine_for_tests
from tests.compose_stack import ComposeStack, build_images
from tests.replicated_load import Ledger, Load, verify

pytestmark = [pytest.mark.slow, pytest.mark.docker]

RATE = 1.5  # evaluations submitted per second, each running for about half a second
DOWN = 2.0  # seconds a killed container stays down before it is started again
# Run inside a scheduler's container: who leads the work queue, and who holds the leader lease.
_LEADERS = """
import asyncio, json, os, nats
from evalmesh_common.subjects import JOBS_STREAM, LEADER_BUCKET
from evalmesh_scheduler.leader import LEADER_KEY
async def main():
    client = await nats.connect(os.environ["EVALMESH_NATS_URL"].split(","), connect_timeout=2)
    js = client.jetstream()
    stream = (await js.stream_info(JOBS_STREAM)).cluster.leader
    lease = (await (await js.key_value(LEADER_BUCKET)).get(LEADER_KEY)).value.decode()
    print(json.dumps({"nats": stream, "scheduler": lease}))
    await client.close()
asyncio.run(main())
"""


@dataclasses.dataclass
class Fault:
    """One kill and what it cost."""

    service: str
    in_flight: int = 0
    # From the kill to the end of the first evaluation submitted after it (HIGH priority), as
    # storage has it, and as its watcher through the edge saw it.
    recovered: float = 0.0
    watched: float = 0.0
    healthy_again: float = 0.0  # kill to the container healthy again


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with engine_for_tests() as found:
        if isinstance(found, str):
            pytest.skip(found)
        yield found


@pytest.fixture(scope="module")
def stack(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeStack]:
    build_images(engine)
    composed = ComposeStack(
        engine, tmp_path_factory.mktemp("scale"), files=("docker-compose.scale.yml",)
    )
    try:
        composed.up(wait=420)
        yield composed
    finally:
        composed.down(volumes=True)


def _leaders(stack: ComposeStack) -> dict[str, str]:
    out = stack.docker("exec", stack.container("scheduler-1"), "python3", "-c", _LEADERS)
    leaders: dict[str, str] = json.loads(out)
    return leaders


class Campaign:
    """The load through the edge, and the kills it runs through."""

    def __init__(self, stack: ComposeStack, client: AsyncClient) -> None:
        self.stack = stack
        self.client = client
        self.ledger = Ledger()
        self.load = Load(client, self.ledger, RATE, sleep=0.5)
        self.faults: list[Fault] = []

    async def in_flight(self) -> int:
        states = [State.QUEUED, State.RUNNING]
        return len([e async for e in self.client.list(state=states, page_size=500)])

    async def probe(self, since: float, fault: Fault) -> None:
        """How long after ``since`` a new HIGH priority evaluation ended, and was seen to."""
        request = self.ledger.new(0.0, priority="high", watched=True)
        evaluation = await self.load.submit(request)
        deadline = time.monotonic() + 180
        while not await self._ended(evaluation.id):
            assert time.monotonic() < deadline, "the probe did not end"
            await asyncio.sleep(0.2)
        fault.recovered = time.monotonic() - since
        while request.ended_at is None:
            assert time.monotonic() < deadline, "the probe's watcher did not see it end"
            await asyncio.sleep(0.1)
        fault.watched = request.ended_at - since

    async def _ended(self, evaluation_id: str) -> bool:
        try:
            return (await self.client.get(evaluation_id, full=False)).terminal
        except EvalmeshError:  # the client's retries ran out mid-fault: ask again
            return False

    async def kill(self, service: str) -> None:
        """SIGKILL ``service``'s container, start it again after DOWN, wait until healthy."""
        fault = Fault(service, in_flight=await self.in_flight())
        container = self.stack.container(service)
        killed = time.monotonic()
        await asyncio.to_thread(self.stack.docker, "kill", "-s", "KILL", container)
        probe = asyncio.create_task(self.probe(killed, fault))
        await asyncio.sleep(DOWN)
        # A no-op when the engine's restart policy has started it already.
        await asyncio.to_thread(self.stack.compose, "start", service)
        await asyncio.to_thread(self.stack.wait_healthy, service)
        fault.healthy_again = time.monotonic() - killed
        await probe
        self.faults.append(fault)

    def report(self, accepted: int, retried: int) -> str:
        rows = [
            f"| {f.service} | {f.in_flight} | {f.recovered:.1f} s | {f.watched:.1f} s "
            f"| {f.healthy_again:.1f} s |"
            for f in self.faults
        ]
        return "\n".join(
            [
                f"accepted {accepted}, run again after a fault {retried}",
                "| killed | in flight | first evaluation done | its watcher saw it | healthy |",
                "|---|---|---|---|---|",
                *rows,
            ]
        )


async def test_one_of_each_killed_under_load_through_the_edge_loses_nothing(
    stack: ComposeStack, tmp_path: Path
) -> None:
    key = stack.admin_key()
    edge = f"localhost:{stack.settings['EVALMESH_HTTPS_PORT']}"
    retry = RetryPolicy(max_attempts=8, max_backoff=1.0)
    async with AsyncClient(edge, key, root_certificates=stack.ca, retry=retry) as client:
        campaign = Campaign(stack, client)
        stop = asyncio.Event()
        load = asyncio.create_task(campaign.load.run(stop))
        await asyncio.sleep(5)
        leaders = await asyncio.to_thread(_leaders, stack)
        # Each NATS server and scheduler goes by its service's name (--name, the instance id).
        assert leaders["nats"] in ("nats-1", "nats-2", "nats-3"), leaders
        assert leaders["scheduler"] in ("scheduler-1", "scheduler-2"), leaders
        for service in (leaders["nats"], "gateway-1", leaders["scheduler"], "storage-1"):
            await campaign.kill(service)
            await asyncio.sleep(3)
        await campaign.kill("executor-pool-1")
        stop.set()
        await load
        await campaign.load.finish(within=180)
        verdict = await verify(client, campaign.ledger)
    logs = stack.compose("logs", "--no-color", "--timestamps", check=False)
    (tmp_path / "compose.log").write_text(logs)  # kept by pytest for a look afterwards
    print(campaign.report(verdict.accepted, verdict.retried))
    assert verdict.clean, verdict
    assert verdict.accepted >= RATE * 20
    assert len(campaign.faults) == 5
