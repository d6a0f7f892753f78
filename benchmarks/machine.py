"""A description of the machine a run measured, for the report's header."""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import re
import sqlite3
import subprocess
from pathlib import Path

from benchmarks.floor import sandbox_bwrap
from evalmesh_testing.postgres import find_postgres_bin

__all__ = ["describe_machine", "load_average"]


def describe_machine(load: str = "") -> list[tuple[str, str]]:
    """(what, value) pairs: CPU, cores, memory, OS, kernel, cgroups, Python, tools, date, and
    ``load``: the machine's load over the run, which says how quiet it was."""
    return [
        ("date (UTC)", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M")),
        ("commit", _commit()),
        ("CPU", _cpu_model()),
        ("cores", _cores()),
        ("memory", _memory()),
        ("OS", _os_name()),
        ("kernel", platform.release()),
        ("cgroups", _cgroup_version()),
        ("Python", platform.python_version()),
        ("SQLite", sqlite3.sqlite_version),
        ("PostgreSQL", _tool_version(_postgres(), "--version")),
        (
            "bubblewrap (the sandboxes' and the floor's)",
            _tool_version(sandbox_bwrap(), "--version"),
        ),
        ("load average (1 min)", load),
    ]


def load_average() -> float:
    """The 1-minute load average now."""
    return os.getloadavg()[0]


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def _cores() -> str:
    usable = len(os.sched_getaffinity(0))
    total = os.cpu_count() or usable
    return str(usable) if usable == total else f"{usable} usable of {total}"


def _memory() -> str:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                kib = int(line.split()[1])
                return f"{kib / 1024 / 1024:.1f} GiB"
    return "unknown"


def _os_name() -> str:
    with contextlib.suppress(OSError):
        text = Path("/etc/os-release").read_text()
        found = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', text, re.MULTILINE)
        if found:
            return found.group(1)
    return platform.system()


def _cgroup_version() -> str:
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").exists():
        return "v2 (unified)"
    if (root / "unified").is_dir():
        return "v1 (hybrid, with a v2 mount)"
    return "v1" if (root / "memory").is_dir() else "none found"


def _postgres() -> str | None:
    found = find_postgres_bin()
    return str(found / "postgres") if found else None


def _tool_version(binary: str | None, flag: str) -> str:
    if binary is None:
        return "not installed"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run([binary, flag], capture_output=True, text=True, timeout=10)
        return done.stdout.strip().splitlines()[0] if done.stdout.strip() else "unknown"
    return "unknown"


def _commit() -> str:
    root = Path(__file__).resolve().parents[1]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        if head:
            return f"{head} (with uncommitted changes)" if dirty else head
    return "unknown"
