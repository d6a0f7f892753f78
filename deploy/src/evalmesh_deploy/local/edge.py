"""Run Envoy as the local edge: gRPC-web and CORS in front of the gateway, on one loopback port,
and the browser UI's production build on the same origin when there is one."""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from evalmesh_deploy.certs import TlsFiles
from evalmesh_deploy.local.processes import ManagedProcess, StartupError
from evalmesh_envoy import EdgeSettings, render_yaml

__all__ = ["start_edge"]


def _envoy_binary() -> str:
    return str(Path(sys.executable).parent / "envoy")


def _admin_address(path: Path, process: ManagedProcess, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.ensure_running()
        text = path.read_text().strip() if path.exists() else ""
        if text:
            return text
        time.sleep(0.05)
    raise StartupError(f"envoy did not open its admin interface within {timeout:.0f} s")


def _listener_port(admin: str) -> int:
    # Port 0 lets Envoy pick; its loopback-only admin interface tells which port it bound.
    with urllib.request.urlopen(f"http://{admin}/listeners?format=json", timeout=5) as reply:
        listeners = json.load(reply)["listener_statuses"]
    return int(listeners[0]["local_address"]["socket_address"]["port_value"])


def start_edge(
    state_dir: Path,
    gateway_port: int,
    port: int = 0,
    timeout: float = 20.0,
    static_dir: Path | None = None,
    started: Callable[[ManagedProcess], None] = lambda process: None,
    tls: TlsFiles | None = None,
    more_gateway_ports: Sequence[int] = (),
) -> tuple[ManagedProcess, int]:
    """Start Envoy in front of the gateway on ``port`` (0 = free), serving ``static_dir`` (the UI
    build) beside the API when given; return it and its port. ``started`` is called with the
    process as soon as it runs, before it is ready. With ``tls`` the edge serves HTTPS. With
    ``more_gateway_ports`` it balances over those gateways too, health-checked."""
    scheme = "https" if tls else "http"
    origins = (f"{scheme}://127.0.0.1:{port}", f"{scheme}://localhost:{port}") if port else ()
    settings = EdgeSettings(
        listen_host="127.0.0.1",
        listen_port=port,
        gateway_host="127.0.0.1",
        gateway_port=gateway_port,
        gateway_replicas=tuple(("127.0.0.1", more) for more in more_gateway_ports),
        allowed_origins=origins,
        static_dir=static_dir.resolve() if static_dir is not None else None,
        tls_cert_file=tls.cert if tls else None,
        tls_key_file=tls.key if tls else None,
    )
    config = state_dir / "envoy.yaml"
    config.write_text(render_yaml(settings))
    admin_path = state_dir / "envoy-admin.txt"
    admin_path.unlink(missing_ok=True)
    argv = [
        _envoy_binary(),
        "-c",
        str(config),
        "--disable-hot-restart",
        "--admin-address-path",
        str(admin_path),
        "--log-level",
        "warning",
    ]
    process = ManagedProcess("envoy", argv, state_dir / "logs" / "envoy.log")
    process.start()
    started(process)
    return process, _listener_port(_admin_address(admin_path, process, timeout))
