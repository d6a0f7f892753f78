"""A throwaway PostgreSQL cluster with PostgreSQL's own durability defaults.

``evalmesh_testing.postgres.PostgresCluster`` turns fsync off, which is right for tests but
would flatter PostgreSQL next to SQLite (which the storage service runs with
``synchronous = FULL``). Here the cluster keeps ``fsync`` and ``synchronous_commit`` on, as a
production server would. It runs as ``nobody`` when we are root (initdb refuses root) and is
stopped by ``pg_ctl`` and deleted at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from evalmesh_testing.ports import free_port
from evalmesh_testing.postgres import find_postgres_bin

__all__ = ["durable_postgres", "postgres_missing"]

_OWNER = "nobody"
_DATABASE = "evalmesh"


def postgres_missing() -> str:
    """Why no cluster can be started here, or "" when one can."""
    if find_postgres_bin() is None:
        return "PostgreSQL binaries (initdb, pg_ctl) are not installed"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: initdb refuses root"
    return ""


@contextlib.contextmanager
def durable_postgres() -> Iterator[str]:
    """Start a fresh cluster on a free loopback port; yield the SQLAlchemy URL of an empty
    database; stop and delete the cluster afterwards."""
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        raise RuntimeError(postgres_missing())
    root = Path(tempfile.mkdtemp(prefix="evalmesh-bench-pg-"))
    data, sock, port = root / "data", root / "sock", free_port()
    sock.mkdir()
    if os.geteuid() == 0:
        root.chmod(0o755)
        for path in (root, sock):
            shutil.chown(path, _OWNER)
    pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(data)]
    try:
        _run(
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
        )
        options = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c max_connections=200"
        _run(*pg_ctl, "-l", str(root / "postgres.log"), "-o", options, "-w", "-t", "60", "start")
        _run(
            str(bin_dir / "createdb"), "-h", str(sock), "-p", str(port), "-U", "postgres", _DATABASE
        )
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/{_DATABASE}"
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            _run(*pg_ctl, "-m", "fast", "-w", "-t", "60", "stop")
        shutil.rmtree(root, ignore_errors=True)


def _run(*argv: str) -> None:
    full = ["runuser", "-u", _OWNER, "--", *argv] if os.geteuid() == 0 else list(argv)
    done = subprocess.run(full, capture_output=True, text=True, check=False, cwd="/")
    if done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, full, done.stdout, done.stderr)
