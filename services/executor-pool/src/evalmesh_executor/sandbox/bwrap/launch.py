"""Starting bwrap: the descriptors it reads, the argv, the host user, the status pipe.

Nothing about a job is in a launch: bwrap starts for a shape (runtime, scratch size, rlimits),
and the job arrives later through the hand-over pipe on the program's stdin.
"""

from __future__ import annotations

import asyncio
import os

from evalmesh_executor.sandbox.core.models import MAX_CHUNK_BYTES

from .fds import close_all, sealed_memfd
from .host import HostSetup, Launch, Shape
from .layout import ETC_FILES, BwrapFds, Rlimits, bwrap_argv
from .runtime import Runtime
from .scratch import Scratch

__all__ = ["launch"]


async def launch(
    host: HostSetup, runtime: Runtime, shape: Shape, scratch: Scratch | None
) -> Launch:
    """Start bwrap for one shape, binding ``scratch`` at /tmp and /dev/shm when given.
    Everything else it reads comes from sealed memfds and pipes."""
    etc = {dest: sealed_memfd(dest, data) for dest, data in ETC_FILES.items()}
    seccomp = sealed_memfd("seccomp", host.seccomp_filter) if host.seccomp_filter else None
    block_r, block_w = os.pipe()
    status_r, status_w = os.pipe()
    stdin_r, stdin_w = os.pipe()
    fds = BwrapFds(etc, block_r, status_w, seccomp)
    passed = [fd for fd in (*etc.values(), seccomp, block_r, status_w) if fd is not None]
    transport = None
    try:
        status, transport = await _open_status(status_r)
        proc = await _exec(host, runtime, shape, scratch, fds, stdin_r, passed)
    except BaseException:
        close_all([block_w, stdin_w])
        if transport is not None:
            transport.close()
        raise
    finally:
        close_all([*passed, stdin_r])
    return Launch(proc, status, transport, block_w, stdin_w)


async def _exec(
    host: HostSetup,
    runtime: Runtime,
    shape: Shape,
    scratch: Scratch | None,
    fds: BwrapFds,
    stdin: int,
    pass_fds: list[int],
) -> asyncio.subprocess.Process:
    argv = bwrap_argv(
        host.bwrap,
        runtime,
        root_links=host.root_links,
        scratch_bytes=shape.scratch_bytes if host.tmpfs_size_supported else None,
        fds=fds,
        rlimits=Rlimits(shape.max_open_files, shape.max_file_size_bytes),
        boot_bytes=len(host.boot_code[runtime.name]),
        overlay_empty=host.overlay_empty,
        scratch_mounts=(str(scratch.tmp), str(scratch.shm)) if scratch is not None else None,
    )
    return await asyncio.create_subprocess_exec(
        *_as_host_user(host, argv),
        stdin=stdin,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        pass_fds=pass_fds,
        cwd="/",
        env={},  # bwrap's pid 1 keeps this block: /proc/1/environ inside shows it
        start_new_session=True,
        limit=MAX_CHUNK_BYTES,
    )


def _as_host_user(host: HostSetup, argv: list[str]) -> list[str]:
    """Prefix util-linux setpriv to drop to the unprivileged host user.

    Popen(user=...) would do the same but disables vfork, and fork()ing a large executor
    costs tens of milliseconds per job; setpriv costs one exec.
    """
    if host.host_ids is None:
        return argv
    uid, gid = host.host_ids
    return [host.setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--", *argv]


async def _open_status(
    status_r: int,
) -> tuple[asyncio.StreamReader, asyncio.ReadTransport]:
    """A StreamReader over bwrap's --json-status-fd pipe; takes ownership of status_r."""
    reader = asyncio.StreamReader()
    try:
        pipe = os.fdopen(status_r, "rb", buffering=0)
    except BaseException:
        os.close(status_r)
        raise
    try:
        transport, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe
        )
    except BaseException:
        pipe.close()
        raise
    return reader, transport
