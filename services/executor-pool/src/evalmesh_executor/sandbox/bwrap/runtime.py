"""Named runtimes: which interpreter runs the code and which host paths it needs."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace

from evalmesh_executor.sandbox.core.models import SandboxUnavailableError

from .tree import PackageTree

__all__ = [
    "DEFAULT_RUNTIMES",
    "PYTHON",
    "Runtime",
    "boot_code",
    "python_with_tree",
    "runtime_identity",
]

# Read through a pipe, never through the environment: -I ignores PYTHON* variables.
_VERSION_PROBE = "import sys; print(sys.version.split()[0])"
# Compiled as `python -c` compiles its program: as "<string>", with no inherited flags.
_COMPILE = (
    "import marshal, sys; sys.stdout.buffer.write(marshal.dumps(compile("
    "sys.stdin.buffer.read(), '<string>', 'exec', dont_inherit=True)))"
)


@dataclass(frozen=True, slots=True)
class Runtime:
    """An interpreter and the host paths it sees.

    argv: interpreter and flags; `-c` and the boot program (``boot``) are appended.
    ro_binds: host directories bound read-only at the same path inside the sandbox.
    masked: directories inside those binds replaced by an empty read-only tmpfs (used to
        keep site-packages the host happens to have out of a standard-library runtime).
    tree: a package tree (see tree.py) mounted read-only at its site directory, which lies
        inside a masked directory: the runtime's packages are then exactly the tree's.
    """

    name: str
    argv: tuple[str, ...]
    ro_binds: tuple[str, ...] = ("/usr",)
    masked: tuple[str, ...] = ()
    tree: PackageTree | None = None

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


def python_with_tree(tree: PackageTree) -> Runtime:
    """The standard-library runtime plus a package tree, named after the tree's runtime."""
    masked = [m for m in PYTHON.masked if tree.site_dir.startswith(m.rstrip("/") + "/")]
    if not masked:  # bwrap could not create the mount point in the read-only /usr
        raise SandboxUnavailableError(
            f"runtime {tree.runtime}: its site directory {tree.site_dir} is not under "
            f"{' or '.join(PYTHON.masked)}"
        )
    return replace(PYTHON, name=tree.runtime, tree=tree)


def _sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(os.path.realpath(path), "rb") as binary:
        for block in iter(lambda: binary.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _combined(interpreter: str, tree: PackageTree) -> str:
    material = f"interpreter sha256:{interpreter}\ntree {tree.digest}\n"
    return hashlib.sha256(material.encode()).hexdigest()


async def runtime_identity(runtime: Runtime) -> str:
    """`<name> <version> sha256:<digest>`: the digest of the resolved interpreter binary, or,
    for a runtime with a package tree, of that digest and the tree's together."""
    if not await asyncio.to_thread(os.access, runtime.interpreter, os.X_OK):
        raise SandboxUnavailableError(f"runtime {runtime.name}: {runtime.interpreter} is missing")
    status, out, _ = await _run_on_host(runtime, _VERSION_PROBE, b"")
    if status != 0:
        raise SandboxUnavailableError(f"runtime {runtime.name}: version probe failed")
    version = out.decode().strip()
    digest = await asyncio.to_thread(_sha256_of, runtime.interpreter)
    tree = runtime.tree
    if tree is not None:
        if version.rsplit(".", 1)[0] != tree.python:
            raise SandboxUnavailableError(
                f"runtime {runtime.name}: its tree is for Python {tree.python}, "
                f"{runtime.interpreter} is {version} (scripts/setup rebuilds it)"
            )
        digest = _combined(digest, tree)
    return f"{runtime.name} {version} sha256:{digest}"


async def boot_code(runtime: Runtime, source: str) -> bytes:
    """``source`` compiled by the runtime's own interpreter, marshalled (its format is that
    interpreter's): what each of the runtime's sandboxes loads first (``layout.boot_loader``)."""
    status, code, said = await _run_on_host(runtime, _COMPILE, source.encode())
    if status != 0 or not code:
        raise SandboxUnavailableError(
            f"runtime {runtime.name}: {runtime.interpreter} cannot compile the boot program: "
            f"{said.decode(errors='replace').strip()[-500:]}"
        )
    return code


async def _run_on_host(runtime: Runtime, program: str, stdin: bytes) -> tuple[int, bytes, bytes]:
    """Run ``program`` with the runtime's interpreter on the host, isolated (``-I``, no
    environment): its exit status, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        runtime.interpreter,
        "-I",
        "-c",
        program,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={},
    )
    out, err = await process.communicate(stdin)
    return process.returncode if process.returncode is not None else -1, out, err
