"""The mesh with its components replicated, as processes on loopback, for tests of failures:
a NATS JetStream cluster (:class:`NatsCluster`), storage instances on one database, schedulers,
executor pools and gateways, and one Envoy edge balancing over the gateways.

The wiring comes from the catalog (``evalmesh_deploy.catalog``): each member gets what the
catalog says its component needs, with the address of every replica of it (a comma-separated
list, which services balance over). Every member has a free port chosen once, so a member that
is killed is started again where its clients expect it, under the same identity (the executor's
``EVALMESH_INSTANCE_ID``, the scheduler's), as a supervisor restarts a crashed pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import nats
from nats.js.errors import NotFoundError

from evalmesh_common.server.health_client import wait_for_serving
from evalmesh_common.subjects import LEADER_BUCKET
from evalmesh_deploy.catalog import (
    DATABASE_URL_VARIABLE,
    EXECUTOR_POOL,
    GATEWAY,
    SCHEDULER,
    SERVICES,
    Component,
    service_env,
)
from evalmesh_deploy.local.bootstrap import create_admin_key
from evalmesh_deploy.local.edge import start_edge
from evalmesh_deploy.local.processes import ManagedProcess, StartupError, read_port_file
from evalmesh_scheduler.leader import LEADER_KEY
from evalmesh_testing.nats_cluster import NatsCluster
from evalmesh_testing.ports import free_port

__all__ = ["Member", "ReplicatedMesh"]

# Components whose replicas each need an identity of their own that survives a restart.
_IDENTIFIED = {EXECUTOR_POOL.name, SCHEDULER.name}


@dataclass
class Member:
    """One replica of a service: its ports, fixed for its life, and its current process."""

    component: Component
    index: int
    port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    process: ManagedProcess | None = None

    @property
    def name(self) -> str:
        """``<component>-<n>``, counting from 1: its log file and its identity."""
        return f"{self.component.name}-{self.index + 1}"

    @property
    def address(self) -> str:
        """Where it listens."""
        return f"127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        """Its Prometheus metrics."""
        return f"http://127.0.0.1:{self.metrics_port}/metrics"


class ReplicatedMesh:
    """Every service in ``replicas[name]`` copies (1 if unnamed), NATS in ``nats_size`` members,
    storage on ``database_url``, ``env`` given to every service."""

    def __init__(
        self,
        directory: Path,
        database_url: str,
        replicas: Mapping[str, int],
        env: Mapping[str, str] | None = None,
        nats_size: int = 3,
    ) -> None:
        self.directory = directory
        self.database_url = database_url
        self.env = dict(env or {})
        self.nats = NatsCluster(directory / "nats", nats_size)
        self.members = {
            c.name: [Member(c, i) for i in range(replicas.get(c.name, 1))] for c in SERVICES
        }
        self.edge: ManagedProcess | None = None
        self.edge_address = ""
        self.admin_api_key = ""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def address(self, component: str) -> str:
        """Every replica of ``component``, separated by commas (what its clients dial)."""
        return ",".join(member.address for member in self.members[component])

    def member(self, component: str, index: int) -> Member:
        """Replica ``index`` of ``component``."""
        return self.members[component][index]

    def start(self, timeout: float = 120.0) -> None:
        """Start NATS, then each service's replicas in the catalog's order, then the edge."""
        try:
            self.nats.start(timeout)
            for component in SERVICES:
                members = self.members[component.name]
                for member in members:
                    self._spawn(member)
                for member in members:
                    self.wait_serving(member, timeout)
            self.admin_api_key = create_admin_key(self.members["storage"][0].address)
            self._start_edge(timeout)
        except BaseException:
            self.stop()
            raise

    def kill(self, component: str, index: int) -> None:
        """SIGKILL replica ``index`` of ``component`` and wait until it is gone."""
        process = self.member(component, index).process
        if process is not None:
            process.send_signal(signal.SIGKILL)
            process.wait(10)

    def restart(self, component: str, index: int, timeout: float = 60.0) -> float:
        """Start replica ``index`` again where it was; return the seconds until it was SERVING."""
        member = self.member(component, index)
        if member.process is not None and member.process.poll() is None:
            member.process.stop()
        start = time.monotonic()
        self._spawn(member)
        self.wait_serving(member, timeout)
        return time.monotonic() - start

    def wait_serving(self, member: Member, timeout: float) -> None:
        """Wait until ``member`` reports SERVING (failing at once if it exits)."""
        deadline = time.monotonic() + timeout
        service = member.component.health_service
        while True:
            assert member.process is not None
            member.process.ensure_running()
            with contextlib.suppress(TimeoutError):
                asyncio.run(wait_for_serving(member.address, service, timeout=1.0))
                return
            if time.monotonic() > deadline:
                raise StartupError(f"{member.name} is not SERVING:\n{member.process.log_tail()}")

    def serving(self, member: Member) -> bool:
        """Whether ``member`` runs and reports SERVING now."""
        if member.process is None or member.process.poll() is not None:
            return False
        service = member.component.health_service
        try:
            asyncio.run(wait_for_serving(member.address, service, timeout=1.0))
        except TimeoutError:
            return False
        return True

    def healthy(self) -> bool:
        """Every NATS member current, every replica SERVING, every gateway healthy at the edge."""
        members = [member for group in self.members.values() for member in group]
        return (
            self.nats.healthy()
            and all(self.serving(member) for member in members)
            and self.edge_healthy_gateways() == len(self.members[GATEWAY.name])
        )

    def stream_leader(self, stream: str) -> int:
        """The index of the NATS member that leads ``stream`` now."""
        name = asyncio.run(self._stream_leader(stream))
        return [node.name for node in self.nats.nodes].index(name)

    def leader(self) -> int:
        """The index of the scheduler that holds the leader lease now, or -1 if none does."""
        holder = asyncio.run(self._leader_id())
        names = [_identity(member) for member in self.members[SCHEDULER.name]]
        return names.index(holder) if holder in names else -1

    def edge_healthy_gateways(self) -> int:
        """How many gateways the edge's health checks count as healthy now."""
        admin = (self.directory / "envoy-admin.txt").read_text().strip()
        with urllib.request.urlopen(f"http://{admin}/clusters?format=json", timeout=5) as reply:
            clusters = json.load(reply)["cluster_statuses"]
        gateway = next(cluster for cluster in clusters if cluster["name"] == "gateway")
        return sum(
            1
            for host in gateway.get("host_statuses", [])
            if host.get("health_status", {}).get("eds_health_status") == "HEALTHY"
            and not host["health_status"].get("failed_active_health_check")
            and not host["health_status"].get("failed_outlier_check")
        )

    def stop(self) -> None:
        """Stop everything by pid, the edge first and NATS last. Idempotent."""
        if self.edge is not None:
            self.edge.stop()
            self.edge = None
        for component in reversed(SERVICES):
            for member in self.members[component.name]:
                if member.process is not None:
                    with contextlib.suppress(Exception):
                        member.process.stop()
        self.nats.stop()

    def _spawn(self, member: Member) -> None:
        port_file = self.directory / "ports" / f"{member.name}.port"
        port_file.parent.mkdir(parents=True, exist_ok=True)
        port_file.unlink(missing_ok=True)
        env = {**os.environ, **self._env(member), "EVALMESH_PORT_FILE": str(port_file)}
        argv = [sys.executable, "-m", member.component.module]
        log = self.directory / "logs" / f"{member.name}.log"
        member.process = ManagedProcess(member.name, argv, log, env)
        member.process.start()
        read_port_file(port_file, member.process)

    def _env(self, member: Member) -> dict[str, str]:
        def endpoint(need: Component) -> str:
            return self.nats.url if need.name == "nats" else self.address(need.name)

        env = {
            **service_env(member.component, endpoint),
            # Streams, consumers and buckets on three members of a cluster of three or more.
            "EVALMESH_JETSTREAM_REPLICAS": "3" if len(self.nats.nodes) >= 3 else "1",
            "EVALMESH_LISTEN_ADDRESS": member.address,
            "EVALMESH_METRICS_PORT": str(member.metrics_port),
            "EVALMESH_PROBE_INTERVAL": "0.2",
        }
        if member.component.database:
            env[DATABASE_URL_VARIABLE] = self.database_url
        if member.component.name in _IDENTIFIED:
            env["EVALMESH_INSTANCE_ID"] = _identity(member)
        return {**env, **self.env}

    def _start_edge(self, timeout: float) -> None:
        ports = [member.port for member in self.members[GATEWAY.name]]
        self.edge, port = start_edge(self.directory, ports[0], more_gateway_ports=ports[1:])
        self.edge_address = f"127.0.0.1:{port}"
        admin = (self.directory / "envoy-admin.txt").read_text().strip()
        deadline = time.monotonic() + timeout
        while not _ready(admin):  # the listener waits for the first health checks
            self.edge.ensure_running()
            if time.monotonic() > deadline:
                raise StartupError("the edge did not become ready")
            time.sleep(0.05)

    async def _stream_leader(self, stream: str) -> str:
        client = await nats.connect(servers=self.nats.url.split(","), connect_timeout=2)
        try:
            info = await client.jetstream().stream_info(stream)
            return info.cluster.leader if info.cluster and info.cluster.leader else ""
        finally:
            await client.close()

    async def _leader_id(self) -> str:
        client = await nats.connect(servers=self.nats.url.split(","), connect_timeout=2)
        try:
            bucket = await client.jetstream().key_value(LEADER_BUCKET)
            with contextlib.suppress(NotFoundError):
                entry = await bucket.get(LEADER_KEY)
                return (entry.value or b"").decode()
            return ""
        finally:
            await client.close()


def _identity(member: Member) -> str:
    return member.name


def _ready(admin: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{admin}/ready", timeout=2) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False
