"""Test helpers with no gRPC dependency: a throwaway PostgreSQL cluster, the service as a process.

``PostgresCluster`` runs ``initdb`` and ``pg_ctl`` from the local PostgreSQL binaries on a free
port, listening on 127.0.0.1 and a private socket directory. PostgreSQL refuses to run as root,
so under root the cluster belongs to an unprivileged account (``nobody``) through ``runuser``.
``StorageProcess`` runs ``python -m evalmesh_storage`` on port 0 and finds its port through the
port file. Tests across the repository use these; nothing here is imported by the service.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["PostgresCluster", "StorageProcess", "find_postgres_bin", "free_port"]

_BIN_DIRS = (
    "/usr/lib/postgresql/15/bin",
    "/usr/lib/postgresql/16/bin",
    "/usr/lib/postgresql/17/bin",
)
_OWNER = "nobody"
_FAST_UNSAFE = ("-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def find_postgres_bin() -> Path | None:
    """Return the directory holding ``initdb`` and ``pg_ctl``, or None if PostgreSQL is absent."""
    candidates = [Path(d) for d in _BIN_DIRS]
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).parent)
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "pg_ctl").is_file():
            return directory
    return None


class PostgresCluster:
    """A private PostgreSQL cluster in a temporary directory, for tests only (fsync is off)."""

    def __init__(self, bin_dir: Path | None = None) -> None:
        found = bin_dir or find_postgres_bin()
        if found is None:
            raise FileNotFoundError("PostgreSQL binaries (initdb, pg_ctl) not found")
        self.bin_dir = found
        self.root = Path(tempfile.mkdtemp(prefix="evalmesh-pg-"))
        self.data_dir = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.log_file = self.root / "postgres.log"
        self.port = free_port()
        self.user = "postgres"
        self._names = itertools.count(1)
        self._initialised = False

    def url(self, database: str = "postgres", driver: str = "psycopg") -> str:
        """Return the SQLAlchemy URL of ``database`` over TCP."""
        return f"postgresql+{driver}://{self.user}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Initialise the cluster on first use, then start it and wait until it accepts work."""
        if not self._initialised:
            self._initdb()
        listen = (f"-p {self.port}", f"-k {self.socket_dir}", "-c listen_addresses=127.0.0.1")
        options = " ".join((*listen, *_FAST_UNSAFE))
        self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-o",
            options,
            "-w",
            "-t",
            "30",
            "start",
        )

    def stop(self) -> None:
        """Stop the cluster now (fast mode: open sessions are disconnected)."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "30", "stop")

    def is_running(self) -> bool:
        """True while the postmaster is up."""
        status = subprocess.run(
            self._argv("pg_ctl", "-D", str(self.data_dir), "status"),
            capture_output=True,
            check=False,
        )
        return status.returncode == 0

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        database = name or f"test_{os.getpid()}_{next(self._names)}"
        self.psql(f'CREATE DATABASE "{database}"')
        return self.url(database)

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` with psql over the socket and return its unaligned output."""
        result = self._run(
            "psql",
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            str(self.socket_dir),
            "-p",
            str(self.port),
            "-U",
            self.user,
            "-d",
            database,
            "-c",
            sql,
        )
        return result.stdout

    def destroy(self) -> None:
        """Stop the cluster if it runs and delete its files."""
        with contextlib.suppress(subprocess.CalledProcessError):
            if self._initialised and self.is_running():
                self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.destroy()  # a half-started cluster leaves no server or files behind
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.destroy()

    def _initdb(self) -> None:
        self.socket_dir.mkdir(parents=True)
        if os.geteuid() == 0:
            self.root.chmod(0o755)
            for path in (self.root, self.socket_dir):
                shutil.chown(path, _OWNER)
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            self.user,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        self._initialised = True

    def _argv(self, tool: str, *args: str) -> list[str]:
        argv = [str(self.bin_dir / tool) if tool != "psql" else self._psql(), *args]
        return ["runuser", "-u", _OWNER, "--", *argv] if os.geteuid() == 0 else argv

    def _psql(self) -> str:
        local = self.bin_dir / "psql"
        return str(local) if local.is_file() else (shutil.which("psql") or "psql")

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self._argv(tool, *args), capture_output=True, text=True, check=False, cwd=self.root
        )
        if result.returncode != 0:
            log = (
                self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
            )
            raise subprocess.CalledProcessError(
                result.returncode, result.args, result.stdout, f"{result.stderr}\n{log}"
            )
        return result


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
