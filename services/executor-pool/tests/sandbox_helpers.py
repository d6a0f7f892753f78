"""Shared helpers of the sandbox tests (a uniquely named module, imported by tests)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from evalmesh_executor.sandbox import BwrapSandbox, SandboxLimits, SandboxResult

MiB = 1024 * 1024

SMALL = SandboxLimits(
    wall_timeout=2.0,
    memory_bytes=64 * MiB,
    max_processes=32,
    max_output_bytes=64 * 1024,
    cpu_quota=1.0,
    scratch_bytes=8 * MiB,
    max_open_files=64,
    max_file_size_bytes=16 * MiB,
)

Runner = Callable[..., Awaitable[SandboxResult]]


def rss_bytes() -> int:
    """Resident memory of this test process, in bytes."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def open_fd_count() -> int:
    """How many file descriptors this test process holds."""
    return len(list(Path("/proc/self/fd").iterdir()))


def read_host(path: str) -> str:
    """Text of a host file, read by the test (never by the sandbox's trusted side)."""
    return Path(path).read_text()


def sha256_of_file(path: str) -> str:
    """Hex sha256 of the file behind path (symlinks resolved)."""
    return hashlib.sha256(Path(path).resolve().read_bytes()).hexdigest()


def job_processes(marker: bytes) -> list[int]:
    """Host pids whose command line contains marker (no such process may outlive its job)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmdline:
            found.append(int(entry.name))
    return found


def processes_in_cgroups(parent_name: str) -> list[int]:
    """Host pids that sit in a cgroup below `parent_name` (the tests' own parent)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cgroups = (entry / "cgroup").read_text()
        except OSError:
            continue
        if f"/{parent_name}/" in cgroups:
            found.append(int(entry.name))
    return found


async def assert_teardown_complete(sandbox: BwrapSandbox, parent_name: str) -> None:
    """U2: within 1 s, none of the sandbox's job cgroups and no process in them remain.

    Processes are found by cgroup (the tests use a parent name of their own), because
    other executors on this host run jobs of the same shape at the same time.
    """
    deadline = time.monotonic() + 1.0
    while sandbox.live_jobs() or processes_in_cgroups(parent_name):
        if time.monotonic() > deadline:
            left = (sandbox.live_jobs(), processes_in_cgroups(parent_name))
            pytest.fail(f"left behind: {left}")
        await asyncio.sleep(0.02)
