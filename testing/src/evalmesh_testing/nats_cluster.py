"""A NATS JetStream cluster on loopback for tests: nats-server processes (three by default) that
route to each other, each with its own store in the test's directory, on free ports, stopped by
pid. A member can be killed and started again where it was (same ports, same store), as a
crashed server is restarted in production; ``healthy`` asks every member's monitoring
``/healthz``, which answers ok only once its JetStream is current with the cluster."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from evalmesh_deploy.local.processes import ManagedProcess, StartupError
from evalmesh_testing.ports import free_port

__all__ = ["NatsCluster", "NatsNode"]

CLUSTER_NAME = "evalmesh"


@dataclass(frozen=True)
class NatsNode:
    """One member: its server name, its ports and its directory."""

    name: str
    client_port: int
    cluster_port: int
    monitor_port: int
    directory: Path

    @property
    def url(self) -> str:
        """Where clients connect to this member."""
        return f"nats://127.0.0.1:{self.client_port}"


def _config(node: NatsNode, routes: list[str]) -> str:
    server = (
        f"server_name: {node.name}\n"
        f"host: 127.0.0.1\nport: {node.client_port}\n"
        f"http: 127.0.0.1:{node.monitor_port}\n"
        f'jetstream {{\n  store_dir: "{node.directory / "jetstream"}"\n}}\n'
    )
    if len(routes) < 2:
        return server  # one server alone: no cluster to form
    route_list = ", ".join(f'"{route}"' for route in routes)
    return server + (
        f"cluster {{\n  name: {CLUSTER_NAME}\n  listen: 127.0.0.1:{node.cluster_port}\n"
        f"  routes: [{route_list}]\n}}\n"
    )


class NatsCluster:
    """``size`` nats-server processes in one JetStream cluster on 127.0.0.1."""

    def __init__(self, directory: Path, size: int = 3) -> None:
        self.nodes = [
            NatsNode(f"n{i + 1}", free_port(), free_port(), free_port(), directory / f"n{i + 1}")
            for i in range(size)
        ]
        self.processes: list[ManagedProcess | None] = [None] * size

    @property
    def url(self) -> str:
        """Every member's URL, separated by commas: what services take as EVALMESH_NATS_URL."""
        return ",".join(node.url for node in self.nodes)

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

    def start(self, timeout: float = 30.0) -> None:
        """Start every member and wait until the cluster is healthy."""
        try:
            for index in range(len(self.nodes)):
                self.start_member(index)
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise

    def start_member(self, index: int) -> ManagedProcess:
        """Start member ``index`` (again) on its ports, with its store as it was."""
        node = self.nodes[index]
        node.directory.mkdir(parents=True, exist_ok=True)
        routes = [f"nats-route://127.0.0.1:{other.cluster_port}" for other in self.nodes]
        config = node.directory / "nats.conf"
        config.write_text(_config(node, routes))
        binary = str(Path(sys.executable).parent / "nats-server")
        log = node.directory / "nats.log"
        process = ManagedProcess(f"nats-{node.name}", [binary, "-c", str(config)], log)
        process.start()
        self.processes[index] = process
        return process

    def kill(self, index: int) -> None:
        """SIGKILL member ``index`` and wait for it to be gone."""
        process = self.processes[index]
        if process is not None:
            process.send_signal(signal.SIGKILL)
            process.wait(10)

    def member_healthy(self, index: int) -> bool:
        """Whether member ``index`` runs and says its JetStream is current."""
        url = f"http://127.0.0.1:{self.nodes[index].monitor_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                return bool(json.load(reply).get("status") == "ok")
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def healthy(self) -> bool:
        """Whether every member is healthy."""
        return all(self.member_healthy(index) for index in range(len(self.nodes)))

    def wait_healthy(self, timeout: float = 30.0) -> float:
        """Wait until every member is healthy; return how long that took."""
        start = time.monotonic()
        while not self.healthy():
            for process in self.processes:
                if process is not None:
                    process.ensure_running()
            if time.monotonic() - start > timeout:
                raise StartupError(f"the NATS cluster is not healthy after {timeout:.0f} s")
            time.sleep(0.1)
        return time.monotonic() - start

    def stop(self) -> None:
        """Stop every member by pid. Idempotent."""
        for index, process in enumerate(self.processes):
            if process is not None:
                with contextlib.suppress(Exception):
                    process.stop()
                self.processes[index] = None
