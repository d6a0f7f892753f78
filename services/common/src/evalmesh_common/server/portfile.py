"""Atomic port files: how a script or test finds a server that bound port 0."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["remove_port_file", "write_port_file"]


def write_port_file(path: str | os.PathLike[str], port: int) -> None:
    """Write ``port`` and a newline to ``path`` so that readers never see a partial file."""
    target = Path(path)
    # The temporary file must sit in the same directory for the rename to be atomic.
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{port}\n")
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def remove_port_file(path: str | os.PathLike[str]) -> None:
    """Delete the port file, so nothing connects to a port this process no longer owns."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
