"""A throwaway PostgreSQL cluster for tests.

``PostgresCluster`` runs ``initdb`` and ``pg_ctl`` from the local PostgreSQL binaries on a free
port, listening on 127.0.0.1 and a private socket directory. PostgreSQL refuses to run as root,
so under root the cluster belongs to an unprivileged account (``nobody``) through ``runuser``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

from evalmesh_testing.ports import free_port

__all__ = ["PostgresCluster", "find_postgres_bin"]

_BIN_DIRS = (
    "/usr/lib/postgresql/15/bin",
    "/usr/lib/postgresql/16/bin",
    "/usr/lib/postgresql/17/bin",
)
_OWNER = "nobody"
_FAST_UNSAFE = ("-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off")


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
