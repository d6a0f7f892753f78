"""What a job sees of its sandbox on every backend: its user, host name, environment and paths.

These are one definition for both backends, so a program cannot tell which one it runs in from
them: bwrap writes them into its command line and generated /etc, docker into the container's
settings. The programs that run first inside a sandbox (``bwrap.boot``, ``docker.init``) cannot
import this module and repeat CODE_FILENAME; a test holds them to it.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "CODE_FILENAME",
    "HOSTNAME",
    "SANDBOX_ENV",
    "SANDBOX_GID",
    "SANDBOX_UID",
    "SCRATCH_DIR",
    "SHM_DIR",
]

#: The job's uid and gid (nobody, nogroup).
SANDBOX_UID = 65534
SANDBOX_GID = 65534
HOSTNAME = "evalmesh"

# Paths inside the sandbox (never on the host): its two scratch tmpfs.
SCRATCH_DIR = "/tmp"  # noqa: S108
SHM_DIR = "/dev/shm"  # noqa: S108

#: The path the code runs as (``__file__`` on bwrap, tracebacks on both).
CODE_FILENAME = "/job/main.py"

# PYTHON* reach programs the job starts itself; the main interpreter runs with -I -B -u.
SANDBOX_ENV: Mapping[str, str] = {
    "PATH": "/usr/bin:/bin",
    "HOME": SCRATCH_DIR,
    "LANG": "C.UTF-8",
    "PYTHONUNBUFFERED": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
}
