"""Named runtimes: which interpreter runs the code and which host paths it needs."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass

from .models import SandboxUnavailableError

__all__ = ["DEFAULT_RUNTIMES", "PYTHON", "Runtime", "runtime_identity"]

# Read through a pipe, never through the environment: -I ignores PYTHON* variables.
_VERSION_PROBE = "import sys; print(sys.version.split()[0])"


@dataclass(frozen=True, slots=True)
class Runtime:
    """An interpreter and the host paths it sees.

    argv: interpreter and flags; `-c` and the boot program (bwrap_boot) are appended.
    ro_binds: host directories bound read-only at the same path inside the sandbox.
    masked: directories inside those binds replaced by an empty read-only tmpfs (used to
        keep site-packages the host happens to have out of a standard-library runtime).
    """

    name: str
    argv: tuple[str, ...]
    ro_binds: tuple[str, ...] = ("/usr",)
    masked: tuple[str, ...] = ()

    @property
    def interpreter(self) -> str:
        """Absolute path of the interpreter (the same inside and outside the sandbox)."""
        return self.argv[0]


# -I: isolated (no env vars, no user site, script dir not on sys.path); -B: no .pyc writes;
# -u: unbuffered, so output reaches watchers live and survives a kill.
PYTHON = Runtime(
    name="python",
    argv=("/usr/bin/python3", "-I", "-B", "-u"),
    masked=("/usr/local", "/usr/lib/python3/dist-packages"),
)

DEFAULT_RUNTIMES: Mapping[str, Runtime] = {PYTHON.name: PYTHON}


def _sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(os.path.realpath(path), "rb") as binary:
        for block in iter(lambda: binary.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


async def runtime_identity(runtime: Runtime) -> str:
    """`<name> <version> sha256:<digest of the resolved interpreter binary>`."""
    if not await asyncio.to_thread(os.access, runtime.interpreter, os.X_OK):
        raise SandboxUnavailableError(f"runtime {runtime.name}: {runtime.interpreter} is missing")
    probe = await asyncio.create_subprocess_exec(
        runtime.interpreter,
        "-I",
        "-c",
        _VERSION_PROBE,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        env={},
    )
    out, _ = await probe.communicate()
    if probe.returncode != 0:
        raise SandboxUnavailableError(f"runtime {runtime.name}: version probe failed")
    digest = await asyncio.to_thread(_sha256_of, runtime.interpreter)
    return f"{runtime.name} {out.decode().strip()} sha256:{digest}"
