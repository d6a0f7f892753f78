"""The mesh under test, started with the local launcher, and the clients that drive it.

Only public interfaces: ``evalmesh_deploy.local.LocalMesh`` with environment variables the services
already read, and the public gRPC API through ``evalmesh.client.AsyncClient``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from evalmesh.client import AsyncClient, Evaluation, State
from evalmesh_deploy.local import LocalMesh
from evalmesh_deploy.local.bootstrap import create_admin_key

__all__ = [
    "BENCH_ENV",
    "STREAMS_PER_CONNECTION",
    "BenchMesh",
    "ClientPool",
    "CpuMeter",
    "MeshRound",
    "cpu_seconds",
    "rss_bytes",
    "run_mesh_round",
    "running_mesh",
]

# The benchmark measures capacity, not the abuse protections: the per-tenant request rate and
# queued-evaluation caps are lifted. The sandbox is bwrap, like the floor it is compared with,
# even where a Docker engine answers.
BENCH_ENV: Mapping[str, str] = {
    "EVALMESH_TENANT_RATE": "1000000",
    "EVALMESH_TENANT_BURST": "1000000",
    "EVALMESH_TENANT_MAX_QUEUED": "0",
    "EVALMESH_SANDBOX_BACKEND": "bwrap",
}

# The gateway lets one connection hold 100 streams; a run holds one watch stream plus short
# unary calls, so each connection of a pool carries at most this many runs at once.
STREAMS_PER_CONNECTION = 50


@dataclasses.dataclass
class BenchMesh:
    """A running mesh: the launcher (for pids) and what clients need."""

    local: LocalMesh
    address: str
    admin_key: str

    def pid(self, service: str) -> int:
        """The pid of ``service`` (e.g. "gateway"), as the launcher started it."""
        return next(p.pid for p in self.local.processes if p.name == service)

    def client(self, api_key: str | None = None) -> AsyncClient:
        """A client on a connection of its own (gRPC would otherwise share one per target)."""
        options = [("grpc.use_local_subchannel_pool", 1)]
        return AsyncClient(self.address, api_key or self.admin_key, channel_options=options)


@contextlib.contextmanager
def running_mesh(
    state_dir: Path,
    *,
    database_url: str | None = None,
    slots: int = 2,
    executor: bool = True,
    env: Mapping[str, str] | None = None,
) -> Iterator[BenchMesh]:
    """Start NATS, storage (SQLite in ``state_dir`` unless ``database_url``), scheduler, an
    executor-pool with ``slots`` slots (or none), gateway and Envoy; stop them all after."""
    extra = {**BENCH_ENV, "EVALMESH_EXECUTOR_SLOTS": str(slots), **(env or {})}
    if database_url:
        extra["EVALMESH_DATABASE_URL"] = database_url
    local = LocalMesh(
        state_dir,
        edge_port=0,
        extra_env=extra,
        bootstrap_key=create_admin_key,
        without=() if executor else ("executor-pool",),
    )
    try:
        endpoints = local.start(timeout=120)
        yield BenchMesh(local, endpoints.services["gateway"], endpoints.admin_api_key)
    finally:
        local.stop()


class ClientPool:
    """Clients on separate connections, handed out round robin, so that many concurrent
    runs never queue behind the gateway's per-connection stream limit."""

    def __init__(self, mesh: BenchMesh, in_flight: int, api_key: str | None = None) -> None:
        count = max(1, math.ceil(in_flight / STREAMS_PER_CONNECTION))
        self.clients = [mesh.client(api_key) for _ in range(count)]

    def __getitem__(self, index: int) -> AsyncClient:
        return self.clients[index % len(self.clients)]

    async def __aenter__(self) -> ClientPool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await asyncio.gather(*(client.close() for client in self.clients))


@dataclasses.dataclass(frozen=True)
class MeshRound:
    """One round of jobs through the mesh: seconds from the first submit to the last result
    seen, each job's end (seconds after the first submit) and the evaluations."""

    elapsed: float
    ends: list[float]
    evaluations: list[Evaluation]

    @property
    def ok(self) -> int:
        """How many ended SUCCEEDED."""
        return sum(e.state is State.SUCCEEDED for e in self.evaluations)

    @property
    def rate(self) -> float:
        """Jobs per second over the round."""
        return len(self.ends) / self.elapsed if self.elapsed > 0 else 0.0


async def run_mesh_round(pool: ClientPool, codes: Sequence[str]) -> MeshRound:
    """Submit every code at once (``client.run``: submit, watch, read the result) and wait
    for all of them."""
    started = time.perf_counter()

    async def one(index: int, code: str) -> tuple[Evaluation, float]:
        evaluation = await pool[index].run(code)
        return evaluation, time.perf_counter() - started

    done = await asyncio.gather(*(one(i, code) for i, code in enumerate(codes)))
    elapsed = time.perf_counter() - started
    return MeshRound(elapsed, sorted(end for _, end in done), [e for e, _ in done])


def cpu_seconds(pid: int) -> float:
    """The CPU time process ``pid`` has used itself (user and system, not its children's)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass
class CpuMeter:
    """CPU per evaluation of a mesh's processes, over the rounds it measured."""

    mesh: BenchMesh
    services: Sequence[str] = ("storage", "executor-pool", "gateway", "scheduler", "nats-server")
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    evaluations: int = 0

    @contextlib.contextmanager
    def measuring(self, evaluations: int) -> Iterator[None]:
        """Add what the services use during the block, and ``evaluations``, to the totals."""
        pids = {name: self.mesh.pid(name) for name in self.services}
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        yield
        for name, pid in pids.items():
            used = cpu_seconds(pid) - before[name]
            self.seconds[name] = self.seconds.get(name, 0.0) + used
        self.evaluations += evaluations

    def reset(self) -> None:
        """Forget what was measured so far (the warm-up)."""
        self.seconds.clear()
        self.evaluations = 0

    def per_evaluation_ms(self) -> dict[str, float]:
        """Milliseconds of CPU per evaluation, by service."""
        count = max(1, self.evaluations)
        return {name: 1000 * self.seconds.get(name, 0.0) / count for name in self.services}


def rss_bytes(pid: int) -> int:
    """The resident set size of process ``pid`` (VmRSS), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")
