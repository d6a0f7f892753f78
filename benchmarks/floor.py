"""The references evalmesh is measured against: the raw bwrap floor and the sandbox library.

The raw floor is what a careful script would do with no platform at all: a fresh, plain
bubblewrap sandbox per job (every namespace unshared, read-only /usr, fresh /tmp, no
environment), the host's Python inside, N jobs at a time. It starts the interpreter exactly as
evalmesh's default runtime does: the same flags, the host's package directories masked (their
.pth files run at every start-up otherwise, which would make the floor depend on what the host
has installed). The sandbox library reference is
the executor's own ``BwrapSandbox.run`` per job (fresh cgroups, seccomp, the full hardened
layout), so a reader sees what the platform's sandbox costs by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from evalmesh_executor.sandbox import SandboxOutcome, SandboxRequest
from evalmesh_executor.sandbox.bwrap import BwrapSandbox
from evalmesh_executor.sandbox.bwrap.binary import default_bwrap
from evalmesh_executor.sandbox.bwrap.layout import host_root_links
from evalmesh_executor.sandbox.bwrap.runtime import DEFAULT_RUNTIMES

__all__ = [
    "JobTimes",
    "floor_argv",
    "library_sandbox",
    "run_bounded",
    "run_floor_job",
    "run_library_job",
    "sandbox_bwrap",
]

_RUNTIME = DEFAULT_RUNTIMES["python"]
SANDBOX_TMP = "/tmp"  # noqa: S108 (inside the sandbox: a fresh tmpfs)

Job = Callable[[], Awaitable[bool]]


@dataclasses.dataclass(frozen=True)
class JobTimes:
    """One round: seconds from the first start to the last end, each job's end (seconds after
    the round began), and how many jobs gave the expected result."""

    elapsed: float
    ends: list[float]
    ok: int

    @property
    def rate(self) -> float:
        """Jobs per second over the round."""
        return len(self.ends) / self.elapsed if self.elapsed > 0 else 0.0


@functools.cache
def sandbox_bwrap() -> str:
    """The bwrap binary evalmesh's sandboxes run (the bundled one where it is installed, as
    BwrapSandbox picks it): the floor runs the same one."""
    return default_bwrap()


def floor_argv(code: str) -> list[str]:
    """The raw floor's command: plain bwrap around the default runtime's interpreter (``python3
    -I -B -u -c code``), with /bin, /lib... recreated as on the host (symlinks on a merged-/usr
    system) and the runtime's masked directories empty, as in evalmesh's sandboxes."""
    bwrap = sandbox_bwrap()
    links = [part for link in host_root_links() for part in link]
    masks = [part for path in _RUNTIME.masked for part in ("--tmpfs", path)]
    return [
        bwrap, "--unshare-all", "--die-with-parent", "--new-session",
        "--ro-bind", "/usr", "/usr", *links, *masks,
        "--proc", "/proc", "--dev", "/dev", "--tmpfs", SANDBOX_TMP, "--clearenv",
        *_RUNTIME.argv, "-c", code,
    ]  # fmt: skip


async def run_floor_job(code: str, expected: bytes = b"1\n") -> bool:
    """Run ``code`` in a fresh raw bwrap sandbox; True when it printed ``expected``."""
    proc = await asyncio.create_subprocess_exec(
        *floor_argv(code),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await proc.communicate()
    return proc.returncode == 0 and out == expected


async def run_library_job(sandbox: BwrapSandbox, code: str, expected: bytes = b"1\n") -> bool:
    """Run ``code`` through the sandbox library; True when it printed ``expected``."""
    result = await sandbox.run(SandboxRequest(code.encode()))
    return result.outcome is SandboxOutcome.EXITED and result.stdout == expected


@contextlib.asynccontextmanager
async def library_sandbox() -> AsyncIterator[BwrapSandbox]:
    """The executor's bwrap backend with its default settings, prepared once."""
    async with BwrapSandbox() as sandbox:
        yield sandbox


async def run_bounded(count: int, concurrency: int, job: Job) -> JobTimes:
    """Run ``job`` ``count`` times, ``concurrency`` at a time, and time the round."""
    gate = asyncio.Semaphore(concurrency)
    started = time.perf_counter()

    async def one() -> tuple[bool, float]:
        async with gate:
            ok = await job()
        return ok, time.perf_counter() - started

    done = await asyncio.gather(*(one() for _ in range(count)))
    elapsed = time.perf_counter() - started
    return JobTimes(elapsed, sorted(end for _, end in done), sum(ok for ok, _ in done))
