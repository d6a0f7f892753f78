"""What sharing the per-tenant limits between gateways costs a CreateEvaluation, and what the
alternative (one shared counter update per call in JetStream) would cost.

    python -m benchmarks.tenant_limits [--rounds 9] [--calls 1000] [--before PATH]

One NATS server, storage on SQLite and a scheduler (no executor: evaluations stay queued, the
gateway's work is the same), and gateways on the same upstreams: ``off`` shares nothing
(``EVALMESH_TENANT_SYNC_INTERVAL=0``, each gateway on its own, as before the limits were
shared), ``on`` and ``peer`` share their limits with each other (the default), and, with
``--before PATH``, ``before`` runs the gateway package found first on PATH (an older checkout's
``gateway/src``). Each round sends ``calls`` CreateEvaluation calls to each gateway in turn, 8 in
flight, over 8 tenants, in an order that rotates; the figure is the gateway's CPU time
(every thread's, from /proc/<pid>/task/*/schedstat) over the round, less what it spends idle
over as long (measured for 3 s before each round), per call. ``peer`` is measured during
``on``'s rounds: what receiving ``on``'s reports costs it. The idle rates are reported too:
they are the fixed cost of each gateway's background work (probes, and the reports of ``on``
and ``peer``).

The alternative is measured in this process: a JetStream publish with ``Nats-Incr`` (one atomic
counter update and its acknowledgement, the least any shared-state-per-call design costs) to a
counter stream on one server, then on a three-member cluster at R3.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

import grpc.aio
import nats
from nats.js import api

from evalmesh.v1 import (
    api_key_service_pb2,
    api_key_service_pb2_grpc,
    evaluation_pb2,
    evaluation_service_pb2,
    evaluation_service_pb2_grpc,
)
from evalmesh_common.server.health_client import wait_for_serving
from evalmesh_deploy.local.bootstrap import create_admin_key
from evalmesh_deploy.local.nats import start_nats
from evalmesh_deploy.local.processes import ManagedProcess
from evalmesh_testing.nats_cluster import NatsCluster
from evalmesh_testing.servers import start_server

TENANTS = 8
IN_FLIGHT = 8
LIFTED = {"EVALMESH_TENANT_RATE": "1000000", "EVALMESH_TENANT_BURST": "1000000"}
COUNTER_OPS = 2000


def cpu_seconds(pid: int) -> float:
    """CPU time of every live thread of ``pid``, in seconds, to the nanosecond.

    /proc/<pid>/stat counts in clock ticks (10 ms), too coarse for the idle rates; the
    scheduler's own account per thread is exact, and a gateway's threads live as long as it.
    """
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


class Upstreams:
    """NATS, storage and a scheduler, shared by every gateway under test."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.processes: list[ManagedProcess] = []
        self.nats = ""
        self.storage = ""
        self.scheduler = ""

    def start(self) -> None:
        process, self.nats = start_nats(self.directory / "nats")
        self.processes.append(process)
        database = f"sqlite+aiosqlite:///{self.directory / 'storage.db'}"
        self.storage = self._start("evalmesh_storage", {"EVALMESH_DATABASE_URL": database})
        self.scheduler = self._start(
            "evalmesh_scheduler",
            {
                "EVALMESH_NATS_URL": self.nats,
                "EVALMESH_STORAGE_ADDRESS": self.storage,
                "EVALMESH_TENANT_MAX_QUEUED": "0",
            },
        )

    def gateway(self, name: str, env: Mapping[str, str]) -> tuple[ManagedProcess, str]:
        upstream = {
            "EVALMESH_NATS_URL": self.nats,
            "EVALMESH_STORAGE_ADDRESS": self.storage,
            "EVALMESH_SCHEDULER_ADDRESS": self.scheduler,
            **LIFTED,
        }
        process, address = start_server(
            "evalmesh_gateway", {**upstream, **env}, self.directory, name=name
        )
        self.processes.append(process)
        return process, address

    def _start(self, module: str, env: Mapping[str, str]) -> str:
        process, address = start_server(module, env, self.directory)
        self.processes.append(process)
        return address

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()


async def _serving(address: str) -> None:
    await wait_for_serving(address, "evalmesh.v1.EvaluationService", timeout=60)


async def _tenant_keys(address: str, admin: str) -> list[str]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = api_key_service_pb2_grpc.ApiKeyServiceStub(channel)
        keys = []
        for index in range(TENANTS):
            request = api_key_service_pb2.CreateApiKeyRequest(tenant=f"bench-{index}")
            reply = await stub.CreateApiKey(
                request, metadata=(("authorization", f"Bearer {admin}"),), timeout=10
            )
            keys.append(reply.secret)
        return keys


async def _submit_round(address: str, keys: list[str], calls: int) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = evaluation_service_pb2_grpc.EvaluationServiceStub(channel)
        spec = evaluation_pb2.EvaluationSpec(code="print(1)")
        queue = iter(range(calls))

        async def worker() -> None:
            for index in queue:
                request = evaluation_service_pb2.CreateEvaluationRequest(
                    request_id=str(uuid.uuid4()), spec=spec
                )
                key = keys[index % len(keys)]
                await stub.CreateEvaluation(
                    request, metadata=(("authorization", f"Bearer {key}"),), timeout=30
                )

        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))


def _measure_gateways(
    directory: Path, rounds: int, calls: int, before: Path | None
) -> dict[str, list[float]]:
    upstreams = Upstreams(directory)
    upstreams.start()
    try:
        gateways = {
            "off": upstreams.gateway("gateway-off", {"EVALMESH_TENANT_SYNC_INTERVAL": "0"}),
            "on": upstreams.gateway("gateway-on", {}),
            "peer": upstreams.gateway("gateway-peer", {}),
        }
        if before is not None:
            path = os.pathsep.join([str(before), os.environ.get("PYTHONPATH", "")])
            # An older gateway ignores the setting; this one, with older modules, needs it off.
            old = {"PYTHONPATH": path, "EVALMESH_TENANT_SYNC_INTERVAL": "0"}
            gateways["before"] = upstreams.gateway("gateway-before", old)
        for _, address in gateways.values():
            asyncio.run(_serving(address))
        admin = create_admin_key(upstreams.storage)
        keys = asyncio.run(_tenant_keys(gateways["on"][1], admin))
        targets = [name for name in gateways if name != "peer"]
        pids = {name: process.pid for name, (process, _) in gateways.items()}
        return _rounds(gateways, targets, pids, keys, rounds, calls)
    finally:
        upstreams.stop()


def _idle_rates(pids: Mapping[str, int], seconds: float = 3.0) -> dict[str, float]:
    """Each gateway's CPU per second while nobody calls it (probes, reports, heartbeats)."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    time.sleep(seconds)
    return {name: (cpu_seconds(pid) - before[name]) / seconds for name, pid in pids.items()}


def _rounds(
    gateways: Mapping[str, tuple[ManagedProcess, str]],
    targets: list[str],
    pids: Mapping[str, int],
    keys: list[str],
    rounds: int,
    calls: int,
) -> dict[str, list[float]]:
    """Per call, each gateway's CPU over its own rounds, net of what it spends idle; and the
    peer's over "on"'s rounds (receiving reports), net of the same."""
    per_call: dict[str, list[float]] = {name: [] for name in [*targets, "peer"]}
    idle: dict[str, list[float]] = {name: [] for name in pids}
    receiving: list[float] = []  # the peer's CPU per second of "on"'s rounds, net of idle
    for round_index in range(rounds + 1):  # round 0 warms up and is discarded
        rates = _idle_rates(pids)
        shift = round_index % len(targets)
        for target in targets[shift:] + targets[:shift]:
            before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            started = time.monotonic()
            asyncio.run(_submit_round(gateways[target][1], keys, calls))
            elapsed = time.monotonic() - started
            spent = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
            if round_index == 0:
                continue
            net = {name: spent[name] - rates[name] * elapsed for name in pids}
            per_call[target].append(net[target] / calls)
            if target == "on":
                per_call["peer"].append(net["peer"] / calls)
                receiving.append(net["peer"] / elapsed)
        if round_index:
            for name, rate in rates.items():
                idle[name].append(rate)
    for name, values in idle.items():
        per_call[f"{name}, idle, per second"] = values
    per_call["peer, per second of on's traffic"] = receiving
    return per_call


async def _counter_cost(servers: list[str], replicas: int) -> tuple[float, float]:
    """CPU seconds and median seconds of latency per counter update, one at a time."""
    client = await nats.connect(servers=servers)
    js = client.jetstream()
    name = f"COUNTERS_R{replicas}"
    await js.add_stream(
        api.StreamConfig(
            name=name,
            subjects=[f"counters.r{replicas}.>"],
            num_replicas=replicas,
            allow_msg_counter=True,
            allow_direct=True,
        )
    )
    for _ in range(100):  # a new replicated stream answers once its group has a leader
        info = await js.stream_info(name)
        if replicas == 1 or (info.cluster is not None and info.cluster.leader):
            break
        await asyncio.sleep(0.1)
    latencies: list[float] = []
    for index in range(COUNTER_OPS + 100):
        subject = f"counters.r{replicas}.tenant-{index % TENANTS}"
        if index == 100:
            cpu_start = time.process_time()
        started = time.perf_counter()
        await js.publish(subject, b"", headers={"Nats-Incr": "1"})
        if index >= 100:
            latencies.append(time.perf_counter() - started)
    cpu = (time.process_time() - cpu_start) / COUNTER_OPS
    await client.close()
    return cpu, statistics.median(latencies)


def _measure_counters(directory: Path) -> dict[str, tuple[float, float]]:
    process, url = start_nats(directory / "counter-nats")
    try:
        single = asyncio.run(_counter_cost([url], 1))
    finally:
        process.stop()
    with NatsCluster(directory / "counter-cluster") as cluster:
        clustered = asyncio.run(_counter_cost(cluster.url.split(","), 3))
    return {"R1 (one server)": single, "R3 (cluster of 3)": clustered}


def _report(
    gateways: Mapping[str, list[float]], counters: Mapping[str, tuple[float, float]]
) -> str:
    def micro(values: list[float]) -> str:
        low, high = min(values) * 1e6, max(values) * 1e6
        return f"{statistics.median(values) * 1e6:.0f} µs ({low:.0f} to {high:.0f})"

    lines = []
    if gateways:
        lines += ["| gateway | CPU per call, net of idle: median of rounds (range) |", "|---|---|"]
        lines += [f"| {name} | {micro(values)} |" for name, values in gateways.items()]
    if counters:
        lines += ["", "| per-call counter update | CPU in the caller | latency (median) |"]
        lines.append("|---|---|---|")
        lines += [
            f"| {name} | {cpu * 1e6:.0f} µs | {latency * 1e3:.2f} ms |"
            for name, (cpu, latency) in counters.items()
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> int:
    """Measure and print the tables."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tenant_limits")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--before", type=Path, help="an older gateway/src to measure beside")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory(prefix="evalmesh-tenant-limits-") as temp:
        directory = Path(temp)
        gateways = _measure_gateways(directory, args.rounds, args.calls, args.before)
        out(_report(gateways, {}))
        out(_report({}, _measure_counters(directory)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
