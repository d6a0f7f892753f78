"""A small filesystem for the database, which the campaign fills up and frees again.

The campaign first moves itself into a mount namespace of its own with private propagation,
so the tmpfs it mounts is seen only by it and the mesh it starts, and disappears with them
even if the campaign is killed: nothing is left mounted on the host. Filling writes a file of
zeros until the kernel answers ENOSPC (after truncating SQLite's write-ahead log, see
``truncate_wal``); freeing deletes it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import sqlite3
from pathlib import Path

__all__ = ["SmallDisk", "private_mounts", "truncate_wal"]

_CLONE_NEWNS = 0x00020000
_MS_NOSUID = 2
_MS_NODEV = 4
_MS_REC = 16384
_MS_PRIVATE = 1 << 18
_MNT_DETACH = 2
_FILLER = ".chaos-filler"


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def private_mounts() -> str:
    """Enter a new mount namespace with private propagation; "" or why it failed.

    Call before any thread starts: the kernel refuses a multithreaded process.
    """
    libc = _libc()
    if libc.unshare(_CLONE_NEWNS) != 0:
        return f"unshare(CLONE_NEWNS): {os.strerror(ctypes.get_errno())}"
    if libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
        return f"mount --make-rprivate /: {os.strerror(ctypes.get_errno())}"
    return ""


class SmallDisk:
    """A tmpfs of ``size_bytes`` at ``path``."""

    def __init__(self, path: Path, size_bytes: int) -> None:
        self.path = path
        self.size_bytes = size_bytes
        self.mounted = False

    def mount(self) -> None:
        """Mount it (OSError if the kernel refuses)."""
        self.path.mkdir(parents=True, exist_ok=True)
        options = f"size={self.size_bytes},mode=0700".encode()
        flags = _MS_NOSUID | _MS_NODEV
        if _libc().mount(b"tmpfs", str(self.path).encode(), b"tmpfs", flags, options) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"mount tmpfs on {self.path}: {os.strerror(code)}")
        self.mounted = True

    def unmount(self) -> None:
        """Detach it (what the database left there goes with it). Idempotent."""
        if self.mounted:
            _libc().umount2(str(self.path).encode(), _MNT_DETACH)
            self.mounted = False

    def fill(self) -> int:
        """Write zeros until the disk is full; return how many bytes that took."""
        written = 0
        block = b"\0" * (1 << 20)
        with (self.path / _FILLER).open("ab", buffering=0) as filler:
            while True:
                try:
                    written += filler.write(block)
                except OSError as error:
                    if error.errno != errno.ENOSPC:
                        raise
                    block = block[: len(block) // 2]
                    if len(block) < 512:
                        return written

    def free(self) -> None:
        """Delete what ``fill`` wrote."""
        with contextlib.suppress(FileNotFoundError):
            (self.path / _FILLER).unlink()

    def free_bytes(self) -> int:
        """Bytes still free on it."""
        stat = os.statvfs(self.path)
        return stat.f_bavail * stat.f_frsize


def truncate_wal(database: Path) -> None:
    """Checkpoint an SQLite database in WAL mode and truncate its log to nothing.

    A WAL that has been checkpointed is written again from its start, so a database whose
    log has grown to a few megabytes commits into space it already has, full disk or not.
    Truncated, its next commit needs new blocks at once, as a database on a full disk would.
    """
    with contextlib.closing(sqlite3.connect(database, timeout=30)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
