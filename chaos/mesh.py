"""The mesh under fire: the local launcher's mesh, supervised as ``evalmesh up`` runs it, with
the executor's NATS connection going through the campaign's proxy and the database on a disk
the campaign can fill.

Only public interfaces of the services: their environment variables, their health service,
their pids. The one reach into the launcher is ``_service_env`` (overridden below): the
launcher gives every service the same NATS URL, and the link cut needs the executor's alone to
go through the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import grpc.aio

from chaos.proxy import LinkProxy
from evalmesh_common.server.health_client import is_serving
from evalmesh_deploy.catalog import SERVICES, Component
from evalmesh_deploy.local.bootstrap import create_admin_key
from evalmesh_deploy.local.mesh import LocalMesh
from evalmesh_deploy.local.supervisor import RestartPolicy, Supervisor

__all__ = ["HEALTH", "ChaosMesh"]

log = logging.getLogger(__name__)

# The health service each platform service reports, by component name.
HEALTH = {spec.name: spec.health_service for spec in SERVICES}


class _ProxiedLocalMesh(LocalMesh):
    """The launcher's mesh, except that the executor reaches NATS through ``proxy``."""

    def __init__(self, proxy: LinkProxy, state_dir: Path, env: Mapping[str, str]) -> None:
        super().__init__(state_dir, edge_port=0, extra_env=env, bootstrap_key=create_admin_key)
        self.proxy = proxy

    def _service_env(self, spec: Component) -> dict[str, str]:
        env = super()._service_env(spec)
        if spec.name == "executor-pool":
            self.proxy.upstream = self.endpoints.nats.removeprefix("nats://")
            env["EVALMESH_NATS_URL"] = self.proxy.url
        return env


class ChaosMesh:
    """Start, supervise, hurt and stop one local mesh."""

    def __init__(self, state_dir: Path, env: Mapping[str, str]) -> None:
        self.proxy = LinkProxy()
        self.local = _ProxiedLocalMesh(self.proxy, state_dir, env)
        self.supervisor: Supervisor | None = None
        self.reports: list[tuple[float, str]] = []
        self._reports_lock = threading.Lock()
        self._known: set[int] = set()

    @property
    def gateway(self) -> str:
        """The gateway's address (plaintext, loopback)."""
        return self.local.endpoints.services["gateway"]

    @property
    def nats(self) -> str:
        """NATS's client URL (direct, not through the proxy)."""
        return self.local.endpoints.nats

    @property
    def admin_key(self) -> str:
        """The first admin key's secret."""
        return self.local.endpoints.admin_api_key

    def start(self, timeout: float = 120.0) -> None:
        """Start everything, then supervise it as ``evalmesh up`` does (blocking)."""
        self.proxy.start()
        self.local.start(timeout=timeout)
        # The default policy, except that a run of 5 s (not 30) counts as stable: the campaign
        # kills on purpose, and a kill soon after the last one must not wait a crash loop's
        # longer delay (nor make the supervisor give up).
        policy = RestartPolicy(stable_after=5.0, max_fast_crashes=1_000)
        self.supervisor = Supervisor(self.local, self._report, policy)
        self.supervisor.start()

    def stop(self) -> None:
        """Stop supervising, then stop every process by pid (blocking). Idempotent."""
        if self.supervisor is not None:
            self.supervisor.stop()
        self.local.stop()
        self.proxy.stop()

    def pid(self, name: str) -> int:
        """The current pid of component ``name``."""
        return self.local.process(name).pid

    def known_pids(self) -> set[int]:
        """Every pid the launcher ever started in this campaign (all generations)."""
        with contextlib.suppress(RuntimeError):  # a process being replaced, not yet started
            self._known.update(process.pid for process in list(self.local.processes))
        return set(self._known)

    def signal(self, name: str, signum: signal.Signals) -> int:
        """Send ``signum`` to component ``name``; return the pid it went to."""
        pid = self.pid(name)
        self.known_pids()
        os.kill(pid, signum)
        return pid

    def reports_since(self, since: float) -> list[str]:
        """What the supervisor reported since ``since`` (wall clock)."""
        with self._reports_lock:
            return [line for at, line in self.reports if at >= since]

    async def wait_restarted(self, name: str, old_pid: int, within: float) -> bool:
        """Wait until the supervisor has started ``name`` again under a new pid."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            with contextlib.suppress(StopIteration):
                if self.pid(name) != old_pid:
                    return True
            await asyncio.sleep(0.02)
        return False

    async def wait_serving(self, names: list[str], within: float) -> bool:
        """Wait until every named service reports SERVING (checked every 50 ms)."""
        deadline = time.monotonic() + within
        for name in names:
            address = self.local.endpoints.services[name]
            while not await _serving_now(address, HEALTH[name]):
                if time.monotonic() > deadline:
                    return False
                await asyncio.sleep(0.05)
        return True

    def _report(self, line: str) -> None:
        log.info("supervisor: %s", line)
        with self._reports_lock:
            self.reports.append((time.time(), line))


async def _serving_now(address: str, service: str) -> bool:
    """One health check on a fresh channel: a channel kept across the restart would wait out
    gRPC's reconnect backoff (a second and growing) and report the service late."""
    async with grpc.aio.insecure_channel(address) as channel:
        return await is_serving(channel, service, timeout=0.5)
