"""Our servers as real processes for tests: any service on port 0 (``start_server``), and the
storage service on its own (``StorageProcess``), each found through the port file it writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from evalmesh_deploy.local.processes import ManagedProcess, read_port_file

__all__ = ["StorageProcess", "start_server"]


def start_server(
    module: str, env: Mapping[str, str], directory: Path, name: str | None = None
) -> tuple[ManagedProcess, str]:
    """Start ``python -m module`` on 127.0.0.1 port 0 (unless ``env`` names a listen address),
    with ``env`` over this process's environment, its log in ``directory/logs``; return it and
    its address once it listens (its health may lag)."""
    name = name or module
    port_file = directory / f"{name}.port"
    full_env = {
        **os.environ,
        "EVALMESH_LISTEN_ADDRESS": "127.0.0.1:0",
        "EVALMESH_PORT_FILE": str(port_file),
        **env,
    }
    log = directory / "logs" / f"{name}.log"
    process = ManagedProcess(name, [sys.executable, "-m", module], log, full_env)
    process.start()
    try:
        port = read_port_file(port_file, process)
    except BaseException:
        process.stop()  # it may still run after a timeout: nothing outlives a failed start
        raise
    return process, f"127.0.0.1:{port}"


class StorageProcess:
    """The storage service as a child process listening on 127.0.0.1, port chosen by the OS."""

    def __init__(
        self, database_url: str, work_dir: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.work_dir = work_dir
        self.port_file = work_dir / "storage.port"
        self.log_file = work_dir / "storage.log"
        self.env = {
            **os.environ,
            "EVALMESH_DATABASE_URL": database_url,
            "EVALMESH_LISTEN_ADDRESS": "127.0.0.1:0",
            "EVALMESH_PORT_FILE": str(self.port_file),
            "EVALMESH_PROBE_INTERVAL": "100ms",
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.address = ""

    def start(self, wait: float = 30.0) -> str:
        """Start the process and return ``host:port`` once it listens (health may lag)."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "evalmesh_storage"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + wait
        while not self.port_file.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"storage did not start:\n{self.log()}")
            time.sleep(0.02)
        self.address = f"127.0.0.1:{self.port_file.read_text().strip()}"
        return self.address

    def stop(self, wait: float = 30.0) -> int | None:
        """Send SIGTERM, wait for the exit (SIGKILL after ``wait``), return the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(wait)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log(self) -> str:
        """Everything the process wrote so far."""
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
