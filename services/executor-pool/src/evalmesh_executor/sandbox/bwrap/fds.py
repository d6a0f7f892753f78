"""File descriptors handed to bwrap: sealed in-memory files and pipes, never host paths."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import Iterable

__all__ = ["close_all", "sealed_memfd", "write_all"]

_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


def sealed_memfd(name: str, data: bytes) -> int:
    """An anonymous file holding `data`, positioned at 0, that nobody can modify.

    Used for stdin and for every file bwrap copies into the sandbox, so no path on the host
    (which sandboxed code could have swapped for a symlink) is ever opened.
    """
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def close_all(fds: Iterable[int | None]) -> None:
    """Close every fd given, ignoring ones already closed."""
    for fd in fds:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


async def write_all(fd: int, data: bytes) -> None:
    """Write ``data`` to the pipe ``fd`` without blocking the loop (the caller closes ``fd``).

    Raises BrokenPipeError when the reader is gone.
    """
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            writable: asyncio.Future[None] = loop.create_future()
            loop.add_writer(fd, _settle, writable)
            try:
                await writable
            finally:
                loop.remove_writer(fd)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
