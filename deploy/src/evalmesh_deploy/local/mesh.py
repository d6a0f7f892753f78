"""The whole mesh as local processes: NATS, the four services and the Envoy edge."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from evalmesh_common.server.health_client import wait_for_serving
from evalmesh_deploy.catalog import (
    DATABASE_URL_VARIABLE,
    EXECUTOR_POOL,
    NATS,
    SERVICES,
    Component,
    service_env,
)
from evalmesh_deploy.certs import TlsFiles, local_tls
from evalmesh_deploy.local.edge import start_edge
from evalmesh_deploy.local.nats import start_nats
from evalmesh_deploy.local.processes import ManagedProcess, StartupError, read_port_file

__all__ = ["LocalMesh", "MeshEndpoints", "find_runtime_trees", "find_ui_build"]

logger = logging.getLogger(__name__)


# Log files named otherwise than their component (services log to ``<name>.log``).
_LOG_NAMES = {"nats-server": "nats"}

# Where `npm run build -w clients/web` writes the browser UI, relative to the repository root.
UI_BUILD = Path("clients/web/dist")


def find_ui_build(root: Path | None = None) -> Path | None:
    """The UI build under ``root`` (default: the current directory), if one was built."""
    build = (root or Path.cwd()) / UI_BUILD
    return build if (build / "index.html").is_file() else None


# Where scripts/setup builds the bwrap runtimes' package trees (evalmesh_executor.treebuild).
RUNTIME_TREES = Path("build/runtimes")
TREE_RUNTIMES = ("python-ml",)


def find_runtime_trees(root: Path | None = None) -> dict[str, Path]:
    """The package trees built under ``root`` (default: the current directory), by runtime."""
    # Not resolved: the link follows a rebuild, and the executor resolves it when it starts.
    base = (root or Path.cwd()).absolute() / RUNTIME_TREES
    trees = {name: base / name for name in TREE_RUNTIMES}
    return {name: path for name, path in trees.items() if (path / "manifest.json").is_file()}


@dataclasses.dataclass
class MeshEndpoints:
    """MeshEndpoints are where the running mesh listens, as written to the state file."""

    nats: str = ""
    # services["gateway"] is the gateway's plaintext loopback listener (what the mesh and the
    # local tools use); with TLS, gateway_tls is its TLS listener and ca_file the local CA.
    services: dict[str, str] = dataclasses.field(default_factory=dict)
    edge_port: int = 0
    admin_api_key: str = ""
    gateway_tls: str = ""
    ca_file: str = ""
    # Where Prometheus can scrape each component: a URL per service (and Envoy's admin).
    metrics: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def url(self) -> str:
        """The one URL users open: the Envoy edge."""
        scheme = "https" if self.ca_file else "http"
        return f"{scheme}://127.0.0.1:{self.edge_port}"

    def as_dict(
        self, pids: Mapping[str, int], restarts: Mapping[str, int] | None = None
    ) -> dict[str, Any]:
        """The state-file form, read by the CLI and the tests to find the mesh."""
        return {
            "url": self.url,
            "edge": f"127.0.0.1:{self.edge_port}",
            "gateway": self.services.get("gateway", ""),
            "gateway_tls": self.gateway_tls,
            "ca_file": self.ca_file,
            "nats": self.nats,
            "services": self.services,
            "metrics": self.metrics,
            "admin_api_key": self.admin_api_key,
            "pids": dict(pids),
            "restarts": dict(restarts or {}),
        }


class LocalMesh:
    """LocalMesh starts every component in dependency order and stops them in reverse."""

    def __init__(
        self,
        state_dir: Path,
        edge_port: int = 0,
        extra_env: Mapping[str, str] | None = None,
        bootstrap_key: Callable[[str], str] | None = None,
        ui_build: Path | None = None,
        without: Collection[str] = (),
        tls: bool = False,
        metrics: bool = True,
    ) -> None:
        self.state_dir = state_dir
        # With TLS the edge serves HTTPS and the gateway a TLS listener beside its loopback one,
        # both with a certificate from a local CA kept in state_dir/tls (made on first start).
        self.tls = tls
        self.tls_files: TlsFiles | None = None
        # Every service serves Prometheus metrics on a free loopback port of its own, listed in
        # the state file; False turns the listeners off.
        self.metrics = metrics
        # Services left out (e.g. the executor-pool, to measure submits with nothing running).
        self.services = _services_without(without)
        # The edge serves the UI on its own origin when a build exists (scripts/up makes one).
        self.ui_build = ui_build if ui_build is not None else find_ui_build()
        self.edge_port = edge_port
        self.extra_env = dict(extra_env or {})
        self.bootstrap_key = bootstrap_key
        self.endpoints = MeshEndpoints()
        self.processes: list[ManagedProcess] = []
        # How often each component was started again after it exited (see ``respawn``).
        self.restarts: dict[str, int] = {}
        self._lock = threading.RLock()  # the supervisor's threads respawn while others read
        self._stopping = False

    @property
    def state_file(self) -> Path:
        """Where the endpoints and the first admin key are recorded while the mesh runs."""
        return self.state_dir / "mesh.json"

    def start(self, timeout: float = 60.0) -> MeshEndpoints:
        """Start everything and wait until every health check says SERVING."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._stopping = False
        try:
            self._start_all(timeout)
        except BaseException:
            self.stop()
            raise
        self._write_state()
        return self.endpoints

    def stop(self) -> None:
        """Stop every started process by pid, newest first. Idempotent."""
        with self._lock:
            self._stopping = True
            while self.processes:
                process = self.processes.pop()
                status = process.stop()
                logger.info("stopped %s (status %s)", process.name, status)
            with contextlib.suppress(FileNotFoundError):
                self.state_file.unlink()

    def process(self, name: str) -> ManagedProcess:
        """The current process of component ``name`` (``nats-server``, a service, ``envoy``)."""
        with self._lock:
            return next(process for process in self.processes if process.name == name)

    def respawn(self, name: str) -> ManagedProcess:
        """Start component ``name`` again where it was (same port, store, log) and return it
        once it is listening, without waiting for its health (its dependencies may be down).

        The new process replaces the old one in ``processes`` as soon as it starts, so a start
        that fails (StartupError) leaves an exited process there for the supervisor to see.
        """
        with self._lock:
            if self._stopping:
                raise StartupError("the mesh is stopping")
            index = next(i for i, process in enumerate(self.processes) if process.name == name)
            old = self.processes[index]
            self.restarts[name] = self.restarts.get(name, 0) + 1
        old.stop()
        try:
            return self._start_again(name, index)
        finally:
            self._write_state()

    def note(self, name: str, line: str) -> None:
        """Append a launcher's note (an exit, a restart) to component ``name``'s log file."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        path = self.state_dir / "logs" / f"{_LOG_NAMES.get(name, name)}.log"
        with contextlib.suppress(OSError), path.open("a") as log:
            log.write(f"[evalmesh up {stamp}] {line}\n")

    def _start_again(self, name: str, index: int) -> ManagedProcess:
        def started(process: ManagedProcess) -> None:
            with self._lock:
                if self._stopping:  # stop() ran meanwhile: this one must not outlive it
                    process.stop()
                    raise StartupError("the mesh is stopping")
                self.processes[index] = process

        if name == "nats-server":
            return start_nats(self.state_dir, port=_port(self.endpoints.nats), started=started)[0]
        if name == "envoy":
            gateway = _port(self.endpoints.services["gateway"])
            port = self.endpoints.edge_port
            edge = start_edge(
                self.state_dir,
                gateway,
                port,
                static_dir=self.ui_build,
                started=started,
                tls=self.tls_files,
            )[0]
            self._note_edge_metrics()  # its admin interface moved to a new free port
            return edge
        spec = next(spec for spec in self.services if spec.name == name)
        address = self.endpoints.services[name]
        return self._start_service(spec, listen_address=address, started=started)[0]

    def restart_service(self, name: str, timeout: float = 60.0) -> ManagedProcess:
        """Stop service ``name`` by pid (if it still runs) and start a new one on the same port,
        where its clients reconnect; return it once SERVING."""
        spec = next(spec for spec in self.services if spec.name == name)
        index = next(i for i, process in enumerate(self.processes) if process.name == name)
        self.processes[index].stop()
        address = self.endpoints.services[name]
        process, _ = self._start_service(spec, listen_address=address)
        self.processes[index] = process
        _wait_until_serving(process, address, spec, time.monotonic() + timeout)
        self._write_state()
        return process

    def _start_all(self, timeout: float) -> None:
        if self.tls:
            self.tls_files = local_tls(self.state_dir / "tls")
            self.endpoints.ca_file = str(self.tls_files.ca)
        nats, self.endpoints.nats = start_nats(self.state_dir)
        self.processes.append(nats)
        for spec in self.services:
            process, address = self._start_service(spec)
            self.processes.append(process)
            self.endpoints.services[spec.name] = address
        deadline = time.monotonic() + timeout
        for spec, process in zip(self.services, self.processes[1:], strict=True):
            _wait_until_serving(process, self.endpoints.services[spec.name], spec, deadline)
        if self.bootstrap_key is not None:
            self.endpoints.admin_api_key = self._admin_key(self.bootstrap_key)
        edge, self.endpoints.edge_port = start_edge(
            self.state_dir,
            _port(self.endpoints.services["gateway"]),
            self.edge_port,
            static_dir=self.ui_build,
            tls=self.tls_files,
        )
        self.processes.append(edge)
        self._note_edge_metrics()

    def _note_edge_metrics(self) -> None:
        """Envoy's own statistics, from its loopback-only admin interface."""
        admin = self.state_dir / "envoy-admin.txt"
        address = admin.read_text().strip() if self.metrics and admin.exists() else ""
        if address:
            self.endpoints.metrics["envoy"] = f"http://{address}/stats/prometheus"

    def _start_service(
        self,
        spec: Component,
        listen_address: str | None = None,
        started: Callable[[ManagedProcess], None] = lambda process: None,
    ) -> tuple[ManagedProcess, str]:
        port_file = self.state_dir / "ports" / f"{spec.name}.port"
        port_file.parent.mkdir(parents=True, exist_ok=True)
        port_file.unlink(missing_ok=True)
        metrics_file = self.state_dir / "ports" / f"{spec.name}.metrics.port"
        metrics_file.unlink(missing_ok=True)
        env = {
            **os.environ,
            **self._service_env(spec),
            "EVALMESH_PORT_FILE": str(port_file),
            **self._metrics_env(spec, metrics_file),
        }
        tls = self._gateway_tls_env(spec, listen_address)
        if tls:
            env.update(tls)
        elif listen_address is not None:
            env["EVALMESH_LISTEN_ADDRESS"] = listen_address
        argv = [sys.executable, "-m", spec.module]
        process = ManagedProcess(spec.name, argv, self.state_dir / "logs" / f"{spec.name}.log", env)
        process.start()
        started(process)
        address = f"127.0.0.1:{read_port_file(port_file, process)}"
        if self.metrics:  # written before the gRPC port file, so it is there now
            metrics_port = read_port_file(metrics_file, process)
            self.endpoints.metrics[spec.name] = f"http://127.0.0.1:{metrics_port}/metrics"
        if tls:  # the TLS port is the one written last; the mesh keeps using the plaintext one
            self.endpoints.gateway_tls = address
            address = (
                f"127.0.0.1:{read_port_file(Path(tls['EVALMESH_PLAINTEXT_PORT_FILE']), process)}"
            )
        return process, address

    def _gateway_tls_env(self, spec: Component, plaintext: str | None) -> dict[str, str]:
        """The gateway's TLS settings: its certificate, its TLS listener (the same port on a
        restart) and the plaintext loopback listener the mesh uses (``plaintext``, if known)."""
        if spec.name != "gateway" or self.tls_files is None:
            return {}
        port_file = self.state_dir / "ports" / "gateway-plaintext.port"
        port_file.unlink(missing_ok=True)
        return {
            "EVALMESH_LISTEN_ADDRESS": self.endpoints.gateway_tls or "127.0.0.1:0",
            "EVALMESH_TLS_CERT_FILE": str(self.tls_files.cert),
            "EVALMESH_TLS_KEY_FILE": str(self.tls_files.key),
            "EVALMESH_PLAINTEXT_LISTEN_ADDRESS": plaintext or "127.0.0.1:0",
            "EVALMESH_PLAINTEXT_PORT_FILE": str(port_file),
        }

    def _metrics_env(self, spec: Component, port_file: Path) -> dict[str, str]:
        """Each service's own metrics port and port file, set last so that nothing inherited
        (one EVALMESH_METRICS_PORT or _FILE for all) can make two services share one: a free
        port at first, the same one again on a restart, so a scraper's target stays valid."""
        if not self.metrics:
            return {"EVALMESH_METRICS_PORT": "", "EVALMESH_METRICS_PORT_FILE": ""}
        earlier = self.endpoints.metrics.get(spec.name, "")
        port = earlier.rpartition(":")[2].partition("/")[0] if earlier else "0"
        return {"EVALMESH_METRICS_PORT": port, "EVALMESH_METRICS_PORT_FILE": str(port_file)}

    def _service_env(self, spec: Component) -> dict[str, str]:
        env = {"EVALMESH_LISTEN_ADDRESS": "127.0.0.1:0", **service_env(spec, self._endpoint)}
        if spec.database:
            env[DATABASE_URL_VARIABLE] = f"sqlite+aiosqlite:///{self.state_dir / 'evalmesh.db'}"
        if spec.name == EXECUTOR_POOL.name:
            trees = find_runtime_trees()
            if trees and "EVALMESH_BWRAP_RUNTIME_TREES" not in os.environ:
                env["EVALMESH_BWRAP_RUNTIME_TREES"] = ",".join(f"{k}={v}" for k, v in trees.items())
        return {**env, **self.extra_env}

    def _endpoint(self, component: Component) -> str:
        """Where ``component`` listens in this mesh (a URL for NATS, else host:port)."""
        name = component.name
        return self.endpoints.nats if name == NATS.name else self.endpoints.services[name]

    def _admin_key(self, bootstrap: Callable[[str], str]) -> str:
        previous = _read_json(self.state_dir / "admin-key.json").get("secret", "")
        if previous:
            return str(previous)
        secret = bootstrap(self.endpoints.services["storage"])
        key_file = self.state_dir / "admin-key.json"
        key_file.write_text(json.dumps({"secret": secret}))
        key_file.chmod(0o600)
        return secret

    def _write_state(self) -> None:
        with self._lock:
            if self._stopping:
                return
            pids = {process.name: process.pid for process in self.processes}
            state = self.endpoints.as_dict(pids, self.restarts)
        temp = self.state_file.with_suffix(".tmp")
        temp.write_text(json.dumps(state, indent=2) + "\n")
        temp.chmod(0o600)
        os.replace(temp, self.state_file)


def _services_without(names: Collection[str]) -> tuple[Component, ...]:
    names = (names,) if isinstance(names, str) else tuple(names)
    unknown = set(names) - {spec.name for spec in SERVICES}
    if unknown:
        raise ValueError(f"unknown services: {', '.join(sorted(unknown))}")
    kept = tuple(spec for spec in SERVICES if spec.name not in names)
    for spec in kept:
        missing = set(spec.needs) & set(names)
        if missing:
            raise ValueError(f"{spec.name} needs {', '.join(sorted(missing))}")
    return kept


def _wait_until_serving(
    process: ManagedProcess, address: str, spec: Component, deadline: float
) -> None:
    # Poll in short rounds so a service that crashes fails the start at once, with its log.
    while True:
        process.ensure_running()
        with contextlib.suppress(TimeoutError):
            asyncio.run(wait_for_serving(address, spec.health_service, timeout=1.0))
            return
        if time.monotonic() > deadline:
            raise StartupError(f"{spec.name} is not SERVING:\n{process.log_tail()}")


def _port(address: str) -> int:
    return int(address.rpartition(":")[2])


def _read_json(path: Path) -> dict[str, Any]:
    with contextlib.suppress(FileNotFoundError, ValueError):
        data = json.loads(path.read_text())
        if isinstance(data, dict):
            return data
    return {}
