"""A job's scratch space (/tmp and /dev/shm): tmpfs capped in bytes and in files.

bwrap mounts a tmpfs with a size but cannot cap its number of inodes, so a job creating millions
of empty files meets whichever of its memory limit or its wall clock comes first. The executor
(root) therefore mounts each job's two tmpfs itself, with ``size`` and ``nr_inodes``, under a
private root-only directory, and bwrap binds them into the sandbox; the job gets ENOSPC at
either cap, as on a full disk. The mounts never propagate to the host's other mount points
(the base directory is a private mount) and are detached when the job is torn down. The
trusted side only ever names the mount points, in root's directory: nothing inside a tmpfs.

Without root (or where the kernel refuses the mount), bwrap's own tmpfs is used, capped in
bytes only.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from evalmesh_executor.sandbox.core.inside import SANDBOX_GID, SANDBOX_UID

__all__ = ["Scratch", "ScratchMounts"]

log = logging.getLogger(__name__)

_MS_NOSUID, _MS_NODEV, _MS_BIND, _MS_REC, _MS_PRIVATE = 0x2, 0x4, 0x1000, 0x4000, 0x40000
_MNT_DETACH, _UMOUNT_NOFOLLOW = 0x2, 0x8
_BASE = Path("/run/evalmesh/scratch")


@dataclass(frozen=True, slots=True)
class Scratch:
    """One job's two mounted tmpfs (host paths to bind at /tmp and /dev/shm)."""

    directory: Path

    @property
    def tmp(self) -> Path:
        """The host path bound at /tmp (also $HOME)."""
        return self.directory / "tmp"

    @property
    def shm(self) -> Path:
        """The host path bound at /dev/shm."""
        return self.directory / "shm"


class ScratchMounts:
    """Mounts and removes jobs' scratch tmpfs under one private base directory."""

    def __init__(self, base: Path = _BASE) -> None:
        self._base = base
        # This process's own directory: its name starts with the pid, so a later process can
        # tell what a crashed one left from what a live one uses.
        self._own = base / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._libc = ctypes.CDLL(None, use_errno=True)

    @classmethod
    def setup(cls, base: Path = _BASE) -> ScratchMounts | None:
        """The mounter, once its base is a private mount; None where mounts are not allowed."""
        if os.geteuid() != 0:
            return None
        mounts = cls(base)
        try:
            mounts._make_private_base()
            mounts._sweep()
            mounts._own.mkdir(mode=0o711)
            mounts.remove(mounts.create(1024 * 1024, 64))  # can this host mount them at all?
        except OSError as exc:
            log.warning("scratch tmpfs not mounted by the executor (%s): no inode cap", exc)
            return None
        return mounts

    def create(self, size_bytes: int, inodes: int) -> Scratch:
        """Mount a job's /tmp and /dev/shm, each ``size_bytes`` and ``inodes`` files at most."""
        scratch = Scratch(self._own / uuid.uuid4().hex)
        scratch.directory.mkdir(mode=0o711)
        options = (
            f"size={size_bytes},nr_inodes={inodes},mode=0755,uid={SANDBOX_UID},gid={SANDBOX_GID}"
        )
        try:
            for path in (scratch.tmp, scratch.shm):
                path.mkdir(mode=0o700)
                self._mount(b"evalmesh-scratch", path, b"tmpfs", _MS_NOSUID | _MS_NODEV, options)
        except BaseException:
            self.remove(scratch)
            raise
        return scratch

    def remove(self, scratch: Scratch) -> None:
        """Detach the job's tmpfs (their memory is freed once nothing uses them) and rmdir."""
        for path in (scratch.tmp, scratch.shm):
            self._libc.umount2(bytes(path), _MNT_DETACH | _UMOUNT_NOFOLLOW)
            with contextlib.suppress(FileNotFoundError):
                path.rmdir()
        with contextlib.suppress(FileNotFoundError):
            scratch.directory.rmdir()

    def _make_private_base(self) -> None:
        self._base.mkdir(mode=0o711, parents=True, exist_ok=True)
        info = self._base.lstat()
        if info.st_uid != 0 or info.st_mode & 0o022:
            raise OSError(f"{self._base} is not a directory only root may write")
        if not _is_mount_point(self._base):  # a bind of itself, once per boot
            self._mount(bytes(self._base), self._base, None, _MS_BIND, None)
        self._mount(None, self._base, None, _MS_PRIVATE | _MS_REC, None)

    def close(self) -> None:
        """Remove this process's directory (its jobs' scratch must be removed already)."""
        with contextlib.suppress(OSError):
            self._own.rmdir()

    def _sweep(self) -> None:
        """Remove what processes that are gone left behind (a crash, a kill -9)."""
        for owner in self._base.iterdir():
            pid = owner.name.partition("-")[0]
            if pid.isdigit() and Path(f"/proc/{pid}").exists():
                continue
            for directory in owner.iterdir():
                self.remove(Scratch(directory))
            with contextlib.suppress(OSError):
                owner.rmdir()

    def _mount(
        self,
        source: bytes | None,
        target: Path,
        fstype: bytes | None,
        flags: int,
        options: str | None,
    ) -> None:
        data = options.encode() if options is not None else None
        if self._libc.mount(source, bytes(target), fstype, flags, data) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"mount {target}: {os.strerror(errno)}")


def _is_mount_point(path: Path) -> bool:
    """Whether something is mounted exactly at ``path`` (a bind of a directory onto itself
    included, which ``os.path.ismount`` cannot see)."""
    target = str(path.resolve())
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        return any(line.split()[4] == target for line in mountinfo)
