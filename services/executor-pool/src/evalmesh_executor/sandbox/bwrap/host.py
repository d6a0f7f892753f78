"""What the bwrap backend's parts hand each other: the host, and the sandboxes it starts.

``BwrapSandbox.prepare()`` finds out about the host once (`HostSetup`). A sandbox is started
for a `Shape` (what is fixed when bwrap starts), as a `Launch` (``launch``), and becomes a
`Prepared` sandbox once placed in its cgroups (``prepared``); a run (``run``) takes one, and
when its processes are gone, `remove` clears its cgroups and scratch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from evalmesh_executor.sandbox.core.background import Background
from evalmesh_executor.sandbox.core.models import SandboxError, SandboxLimits

from .cgroups import CgroupDriver, JobCgroup, is_busy
from .fds import close_all
from .reaper import wait_gone
from .runtime import Runtime
from .scratch import Scratch, ScratchMounts

__all__ = ["HostSetup", "Launch", "Prepared", "Shape", "remove"]

log = logging.getLogger(__name__)

_REMOVE_TRIES = 50  # a cgroup may be reported busy for a moment after its last task exits
_REMOVE_PAUSE_S = 0.01


@dataclass(frozen=True, slots=True)
class HostSetup:
    """What `BwrapSandbox.prepare()` found out about this host, shared by all runs.

    cleanups: removing finished sandboxes' cgroups and scratch, after their results.
    boot_code: per runtime, the boot program compiled by its interpreter (marshalled).
    after_job_s: how long after a job's end its cleanup and its replacement begin.
    """

    bwrap: str
    setpriv: str
    root_links: list[tuple[str, ...]]
    tmpfs_size_supported: bool
    seccomp_filter: bytes | None
    overlay_empty: str | None
    scratch: ScratchMounts | None
    cleanups: Background
    host_ids: tuple[int, int] | None
    cgroups: CgroupDriver
    identities: Mapping[str, str]
    boot_code: Mapping[str, bytes]
    setup_timeout_s: float
    kill_timeout_s: float
    poll_interval_s: float
    after_job_s: float


@dataclass(frozen=True, slots=True)
class Shape:
    """What is fixed when bwrap starts: the runtime, the scratch caps and the rlimits."""

    runtime: str
    scratch_bytes: int
    scratch_inodes: int
    max_open_files: int
    max_file_size_bytes: int

    @classmethod
    def of(cls, runtime: str, limits: SandboxLimits) -> Shape:
        """The shape a run with these limits needs."""
        return cls(
            runtime,
            limits.scratch_bytes,
            limits.scratch_inodes,
            limits.max_open_files,
            limits.max_file_size_bytes,
        )


@dataclass(frozen=True, slots=True)
class Launch:
    """A started bwrap, blocked before the program: write a byte to `block` to release it.

    `handover` is the write end of the program's stdin, where the job goes.
    """

    proc: asyncio.subprocess.Process
    status: asyncio.StreamReader
    status_transport: asyncio.ReadTransport
    block: int
    handover: int


async def remove(prepared: Prepared, after_s: float = 0.0) -> None:
    """Remove the cgroups and scratch of a sandbox whose processes are all gone, ``after_s``
    from now."""
    if after_s > 0:
        await asyncio.sleep(after_s)
    for _ in range(_REMOVE_TRIES):
        try:
            await asyncio.to_thread(prepared.cgroup.remove)
            break
        except OSError as exc:
            if not is_busy(exc):
                raise
            await asyncio.sleep(_REMOVE_PAUSE_S)
    await asyncio.to_thread(prepared.remove_scratch)


@dataclass(eq=False)
class Prepared:
    """A sandbox whose interpreter waits for its job; `discard` tears it down unused."""

    shape: Shape
    runtime: Runtime
    cgroup: JobCgroup
    launch: Launch
    scratch: Scratch | None
    scratches: ScratchMounts | None
    status_lines: list[bytes] = field(default_factory=list)
    child_pid: int = 0  # the sandbox's pid 1, as the host sees it

    def remove_scratch(self) -> None:
        """Detach the job's scratch tmpfs (once its processes are gone)."""
        if self.scratch is not None and self.scratches is not None:
            self.scratches.remove(self.scratch)

    @property
    def alive(self) -> bool:
        """False once bwrap exited or its sandbox has no process left (the sandbox cannot take
        a job any more). bwrap's monitor outlives a killed sandbox by a moment, and the hand-over
        to it would end as an empty run, so the sandbox's own cgroup is read too."""
        return self.launch.proc.returncode is None and bool(self.cgroup.pids())

    async def discard(self, kill_timeout_s: float) -> None:
        """Kill and remove a sandbox that never got a job (or whose job is over)."""
        try:
            await self.cgroup.kill_all(kill_timeout_s)
            with contextlib.suppress(ProcessLookupError):
                self.launch.proc.kill()
            await asyncio.wait_for(self.launch.proc.wait(), kill_timeout_s)
            await self.cgroup.kill_all(kill_timeout_s)
            await wait_gone([self.child_pid], kill_timeout_s)
            await remove(self)
        except (OSError, SandboxError, TimeoutError) as exc:
            log.error("discarding prepared sandbox %s failed: %s", self.cgroup.name, exc)
        finally:
            close_all([self.launch.handover])
            self.launch.status_transport.close()
