"""Shared helpers of the sandbox tests (a uniquely named module, imported by tests)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from evalmesh_executor.sandbox import OutputChunk, SandboxLimits, SandboxResult
from evalmesh_executor.sandbox.bwrap import PYTHON, BwrapSandbox, Runtime
from evalmesh_executor.sandbox.bwrap.runtime import python_with_tree
from evalmesh_executor.sandbox.bwrap.tree import load_tree

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


async def run_until_printed(
    run: Runner, code: str, marker: bytes, within_s: float = 10.0, **options: Any
) -> asyncio.Future[SandboxResult]:
    """Start run(code, **options); return the running job once its stdout shows marker.

    Tests wait for a job's own word that it got somewhere rather than sleeping a fixed time,
    which a slow or loaded host can outlast.
    """
    printed = bytearray()
    seen = asyncio.Event()

    async def on_output(chunk: OutputChunk) -> None:
        if chunk.stream == "stdout":
            printed.extend(chunk.data)
            if marker in printed:
                seen.set()

    job = asyncio.ensure_future(run(code, on_output=on_output, **options))
    waiting = asyncio.ensure_future(seen.wait())
    await asyncio.wait([job, waiting], timeout=within_s, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    if not seen.is_set():
        ended = job.result() if job.done() else None
        job.cancel()
        pytest.fail(f"the job never printed {marker!r} (within {within_s} s): {ended}")
    return job


async def timed_run(run: Runner, code: str, **options: Any) -> tuple[SandboxResult, float]:
    """run(code, **options) and the seconds it took, as the caller saw them."""
    started = time.monotonic()
    result = await run(code, **options)
    return result, time.monotonic() - started


def assert_still_fast(beside: float, alone: float) -> None:
    """U5/H32: a canary beside a hostile job took at most twice as long as alone, plus 1 s.

    Relative, because how long a run takes is the host's speed. A neighbour held to its limits
    still shares the CPU, the executor and the engine with the canary: on a loaded host that
    slows the canary in proportion, not by seconds of its own.
    """
    bound = 2 * alone + 1.0
    assert beside < bound, f"{beside:.2f} s beside the hostile job, {alone:.2f} s alone"


async def wait_for_job_processes(marker: bytes, count: int, within_s: float) -> None:
    """Poll until exactly `count` host processes carry `marker`; fail after `within_s`.

    A child's command line shows only once the kernel has loaded its program, which can be a
    moment after its parent's fork-and-exec returned: on a loaded host a count taken at once
    misses it.
    """
    deadline = time.monotonic() + within_s
    while len(found := job_processes(marker)) != count:
        if time.monotonic() > deadline:
            pytest.fail(f"{len(found)} process(es) of the job after {within_s} s, not {count}")
        await asyncio.sleep(0.02)


async def assert_gone(paths: list[Path], within_s: float = 1.0) -> None:
    """Within ``within_s`` none of ``paths`` exists (a finished job's cgroup directories are
    removed shortly after its result, off the result's way)."""
    deadline = time.monotonic() + within_s
    while left := [path for path in paths if path.exists()]:
        if time.monotonic() > deadline:
            pytest.fail(f"still there after {within_s} s: {left}")
        await asyncio.sleep(0.02)


async def assert_no_process_left(marker: bytes, within_s: float = 1.0) -> None:
    """U2: within `within_s` of a job's result, no host process carries `marker`."""
    await wait_for_job_processes(marker, 0, within_s)


def rss_bytes() -> int:
    """Resident memory of this test process, in bytes."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def open_fd_count() -> int:
    """How many file descriptors this test process holds, but for reads of /proc: the sandbox's
    stranded-sandbox sweep reads /proc from a thread of its own at any moment (a descriptor
    held for a moment, not a leak)."""
    held = 0
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        held += target != "/proc" and not target.startswith("/proc/")
    return held


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


# The python-ml package tree scripts/setup builds (evalmesh_executor.treebuild).
ML_TREE = Path(__file__).resolve().parents[3] / "build" / "runtimes" / "python-ml"


def python_ml_tree_path() -> Path:
    """The built python-ml tree, or a skip saying how to build it."""
    if not (ML_TREE / "manifest.json").is_file():
        pytest.skip(f"the python-ml tree is not built ({ML_TREE}): run scripts/setup")
    return ML_TREE


def python_ml_runtimes() -> dict[str, Runtime]:
    """The standard-library runtime and python-ml with the built tree (skips without it)."""
    tree = load_tree(python_ml_tree_path(), "python-ml")
    return {"python": PYTHON, "python-ml": python_with_tree(tree)}
