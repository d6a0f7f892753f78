"""The bwrap command line: namespaces, the read-only filesystem and the environment.

Inside the sandbox:
    /usr (read-only, site-packages of the host masked; an overlay of the host's /usr of the job's
        own where bwrap has them, so locks, leases and file notifications a job takes on the
        runtime's files are its own inodes' and reach no other job and not the host),
    the runtime's package tree, if it has one, at its site directory inside a mask (read-only,
        an overlay of the job's own as /usr is),
    /bin /lib /lib64 /sbin as on the host,
    /etc with generated passwd, group, hosts and nsswitch.conf only (no host /etc),
    /job, a small fresh tmpfs, read-only (0555) but the job's own: the boot program makes it
        writable just long enough to write the code as /job/main.py (0444),
    /proc of the job's own pid namespace, a minimal /dev,
    /tmp (also $HOME) and /dev/shm: fresh size-capped tmpfs, the only writable places.
Everything else, including / itself, is read-only. The program is the interpreter running
``boot``, which waits on its stdin for the job (see ``prepared``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources

from evalmesh_executor.sandbox.core.inside import (
    HOSTNAME,
    SANDBOX_ENV,
    SANDBOX_GID,
    SANDBOX_UID,
    SCRATCH_DIR,
    SHM_DIR,
)

from .runtime import Runtime

__all__ = [
    "BOOT_MARKER",
    "BOOT_SOURCE",
    "ETC_FILES",
    "BwrapFds",
    "Rlimits",
    "boot_loader",
    "bwrap_argv",
    "host_root_links",
]

JOB_DIR = "/job"
# Room for the code file (code is at most 1 MiB; the API refuses more).
JOB_DIR_BYTES = 2 * 1024 * 1024

#: The first Python code of every sandbox: the source of ``boot``, read once at import. Each
#: runtime's interpreter compiles it once (``runtime.boot_code``); every sandbox's interpreter
#: gets that code on its stdin, ahead of the job, and runs it (``boot_loader``).
BOOT_SOURCE = (
    resources.files("evalmesh_executor.sandbox.bwrap")
    .joinpath("boot.py")
    .read_text(encoding="utf-8")
)

#: In every sandbox's command line (the boot program's function name): how an executor finds
#: sandboxes that a killed executor left behind (reaper.kill_stranded).
BOOT_MARKER = b"_evalmesh_boot"
assert BOOT_MARKER.decode() in BOOT_SOURCE


def boot_loader(code_bytes: int) -> str:
    """What the interpreter runs (``python -c``): read ``code_bytes`` of the boot program's
    marshalled code from stdin, run it, and call ``_evalmesh_boot()()`` from this module frame,
    so the job runs as deep as before. Compiling the boot program's source at every start cost
    about 1 ms of CPU per sandbox; loading its code, 0.03 ms. The names this defines go with
    the boot program's own before the job starts. A sandbox whose executor went away before
    writing the code exits with 75, as the boot program does."""
    return (
        "import marshal as _m, os as _o\n"
        "_b = b''\n"
        f"while len(_b) < {code_bytes}: _b += _o.read(0, {code_bytes} - len(_b)) or _o._exit(75)\n"
        "exec(_m.loads(_b))\n"
        f"{BOOT_MARKER.decode()}()()\n"
    )


ETC_FILES: Mapping[str, bytes] = {
    "/etc/passwd": (
        "root:x:0:0:root:/root:/usr/sbin/nologin\n"
        f"nobody:x:{SANDBOX_UID}:{SANDBOX_GID}:nobody:/tmp:/usr/sbin/nologin\n"
    ).encode(),
    "/etc/group": f"root:x:0:\nnogroup:x:{SANDBOX_GID}:\n".encode(),
    "/etc/hosts": b"127.0.0.1 localhost\n::1 localhost ip6-localhost\n",
    # Names resolve from /etc/hosts only: a lookup of any outside name fails at once
    # instead of waiting on a resolver that cannot be reached.
    "/etc/nsswitch.conf": b"passwd: files\ngroup: files\nhosts: files\n",
}

_ROOT_LINK_NAMES = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


@dataclass(frozen=True, slots=True)
class BwrapFds:
    """Descriptor numbers (identical in bwrap, thanks to pass_fds) that the argv refers to."""

    etc: Mapping[str, int]
    block: int
    status: int
    seccomp: int | None


def host_root_links(root: str = "/") -> list[tuple[str, ...]]:
    """bwrap arguments recreating /bin, /lib... as on the host (symlinks on merged-/usr)."""
    args: list[tuple[str, ...]] = []
    for name in _ROOT_LINK_NAMES:
        path = os.path.join(root, name)
        if os.path.islink(path):
            args.append(("--symlink", os.readlink(path), "/" + name))
        elif os.path.isdir(path):
            args.append(("--ro-bind", path, "/" + name))
    return args


def _read_only(source: str, dest: str, overlay_empty: str | None) -> list[str]:
    if overlay_empty is None:
        return ["--ro-bind", source, dest]
    # A read-only overlay needs two layers: the host's directory and an empty one.
    return ["--overlay-src", source, "--overlay-src", overlay_empty, "--ro-overlay", dest]


def _filesystem(
    runtime: Runtime,
    root_links: list[tuple[str, ...]],
    scratch: list[str],
    job_dir: list[str],
    fds: BwrapFds,
    overlay_empty: str | None,
    scratch_mounts: tuple[str, str] | None,
) -> list[str]:
    args: list[str] = []
    for path in runtime.ro_binds:
        args += _read_only(path, path, overlay_empty)
    for link in root_links:
        args += link
    for path in runtime.masked:
        args += ["--tmpfs", path]
    if runtime.tree is not None:  # its mount point is made inside a (still writable) mask
        args += _read_only(str(runtime.tree.site_packages), runtime.tree.site_dir, overlay_empty)
    for path in runtime.masked:
        args += ["--remount-ro", path]
    args += ["--proc", "/proc", "--dev", "/dev"]
    if scratch_mounts is None:
        args += [*scratch, "--tmpfs", SCRATCH_DIR, *scratch, "--tmpfs", SHM_DIR]
    else:  # tmpfs the executor mounted, capped in files too (see scratch.py)
        args += ["--bind", scratch_mounts[0], SCRATCH_DIR, "--bind", scratch_mounts[1], SHM_DIR]
    args += ["--perms", "0555", *job_dir, "--tmpfs", JOB_DIR]
    args += ["--remount-ro", "/dev"]
    for dest, fd in fds.etc.items():
        args += ["--ro-bind-data", str(fd), dest]
    args += ["--remount-ro", "/"]
    return args


@dataclass(frozen=True, slots=True)
class Rlimits:
    """Hard (= soft) rlimits the boot program sets first (RLIMIT_CORE is always 0)."""

    nofile: int
    fsize: int

    def argv(self) -> list[str]:
        """The boot program's arguments: RLIMIT_NOFILE and RLIMIT_FSIZE, in that order."""
        return [str(self.nofile), str(self.fsize)]


def bwrap_argv(
    bwrap: str,
    runtime: Runtime,
    *,
    root_links: list[tuple[str, ...]],
    scratch_bytes: int | None,
    fds: BwrapFds,
    rlimits: Rlimits,
    boot_bytes: int,
    overlay_empty: str | None = None,
    scratch_mounts: tuple[str, str] | None = None,
) -> list[str]:
    """The full argv; ``boot_bytes`` is the size of the boot program's code, which the
    executor writes down the program's stdin once the sandbox is placed (see ``prepared``).
    scratch_bytes None means this bwrap has no --size (see README.md here);
    overlay_empty None, that it has no --ro-overlay (the runtime is then bound read-only);
    scratch_mounts, the executor's tmpfs for /tmp and /dev/shm (else bwrap makes its own).

    The rlimits are set inside the sandbox by the boot program, before it reads the job (see
    boot.py): the executor may lack CAP_SYS_RESOURCE to prlimit() a process of another uid,
    setting them on bwrap itself would constrain its setup instead of only the program, and
    util-linux prlimit in between cost an exec per job.
    """
    scratch = ["--size", str(scratch_bytes)] if scratch_bytes is not None else []
    job_dir = ["--size", str(JOB_DIR_BYTES)] if scratch_bytes is not None else []
    args = [
        bwrap,
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--uid",
        str(SANDBOX_UID),
        "--gid",
        str(SANDBOX_GID),
        "--hostname",
        HOSTNAME,
        "--die-with-parent",
        "--new-session",
        "--json-status-fd",
        str(fds.status),
        "--block-fd",
        str(fds.block),
    ]
    if fds.seccomp is not None:
        args += ["--seccomp", str(fds.seccomp)]
    args += _filesystem(runtime, root_links, scratch, job_dir, fds, overlay_empty, scratch_mounts)
    args += ["--chdir", SCRATCH_DIR, "--clearenv"]
    for key, value in SANDBOX_ENV.items():
        args += ["--setenv", key, value]
    return [*args, "--", *runtime.argv, "-c", boot_loader(boot_bytes), *rlimits.argv()]
