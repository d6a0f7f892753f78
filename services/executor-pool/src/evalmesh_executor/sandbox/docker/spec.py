"""The container of one evaluation: every isolation and limit setting in one place.

network none; read-only root; /tmp (also $HOME and the cwd) and /dev/shm are tmpfs capped at
scratch_bytes, noexec/nosuid/nodev, charged to the job's memory cgroup; all capabilities
dropped; no-new-privileges; uid/gid 65534; the seccomp deny list shared with bwrap; pids,
memory (swap = memory, i.e. none), CPU (nano_cpus) limits; RLIMIT_NOFILE, RLIMIT_FSIZE,
RLIMIT_CORE=0; no log driver (output is read from the attach stream, never stored by the
engine); stdin open once, for the code, the job's stdin and the lifeline.

The init is our own pid 1 (``init``), not the engine's (`init=True` would put tini there, which
exits with the program and takes the cgroup accounting with it).
"""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import docker

from evalmesh_executor.sandbox.core import seccomp
from evalmesh_executor.sandbox.core.inside import (
    HOSTNAME,
    SANDBOX_ENV,
    SANDBOX_GID,
    SANDBOX_UID,
    SCRATCH_DIR,
    SHM_DIR,
)
from evalmesh_executor.sandbox.core.models import SandboxLimits

__all__ = ["ContainerSpec", "container_spec", "seccomp_profile", "settings_shape"]

_SCMP_ARCH = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64"}
_EPERM, _ENOSYS, _EAFNOSUPPORT = 1, 38, 97
_MAX_FAMILY = 64


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """Arguments of the create call; `create(api)` performs it."""

    name: str
    image: str
    command: list[str]
    config: Mapping[str, Any]
    host_config: Mapping[str, Any]

    def create(self, api: Any) -> Any:
        """APIClient.create_container with these settings."""
        return api.create_container(
            image=self.image,
            command=self.command[1:],
            entrypoint=self.command[:1],
            name=self.name,
            host_config=api.create_host_config(**self.host_config),
            **self.config,
        )


def _tmpfs(limits: SandboxLimits) -> str:
    return (
        f"rw,noexec,nosuid,nodev,size={limits.scratch_bytes},"
        f"nr_inodes={limits.scratch_inodes},mode=1777"
    )


def container_spec(
    *,
    name: str,
    image: str,
    command: list[str],
    limits: SandboxLimits,
    host_cpus: int,
    labels: Mapping[str, str],
    seccomp_profile: str | None,
) -> ContainerSpec:
    """The settings of one job's container.

    The CPU quota is capped at the host's CPUs (the engine refuses more, and more cannot be
    used anyway).
    """
    security = ["no-new-privileges:true"]
    if seccomp_profile is not None:
        security.append(f"seccomp={seccomp_profile}")
    ulimits = [
        docker.types.Ulimit(name="nofile", soft=limits.max_open_files, hard=limits.max_open_files),
        docker.types.Ulimit(
            name="fsize", soft=limits.max_file_size_bytes, hard=limits.max_file_size_bytes
        ),
        docker.types.Ulimit(name="core", soft=0, hard=0),
    ]
    host_config: dict[str, Any] = {
        "network_mode": "none",
        "read_only": True,
        "tmpfs": {SCRATCH_DIR: _tmpfs(limits), SHM_DIR: _tmpfs(limits)},
        "ipc_mode": "none",
        "cap_drop": ["ALL"],
        "security_opt": security,
        "pids_limit": limits.max_processes,
        "mem_limit": limits.memory_bytes,
        "memswap_limit": limits.memory_bytes,
        "nano_cpus": max(1, int(min(limits.cpu_quota, host_cpus) * 1e9)),
        "ulimits": ulimits,
        "log_config": docker.types.LogConfig(type="none"),
        "init": False,
        "privileged": False,
    }
    config: dict[str, Any] = {
        "user": f"{SANDBOX_UID}:{SANDBOX_GID}",
        "working_dir": SCRATCH_DIR,
        "environment": dict(SANDBOX_ENV),
        "labels": dict(labels),
        "hostname": HOSTNAME,
        "network_disabled": True,
        # With detach False the SDK also sets StdinOnce: the container's stdin closes when the
        # attached client goes away (the lifeline pid 1, ``init``, watches).
        "stdin_open": True,
        "detach": False,
        "tty": False,
    }
    return ContainerSpec(name, image, command, config, host_config)


def settings_shape(limits: SandboxLimits) -> SandboxLimits:
    """The part of `limits` that container_spec turns into container settings.

    The wall timeout and the output cap are enforced by the executor (and pid 1's backstop,
    which comes with the hand-over), not by the container's settings: two requests whose
    limits differ only there get identical containers. Every other field is kept, so a
    field added later is a setting until shown otherwise (a warm container is then merely
    used less often, never with the wrong settings).
    """
    return replace(limits, wall_timeout=1.0, max_output_bytes=1)


def seccomp_profile(machine: str | None = None) -> str:
    """The deny list both backends load (core.seccomp) as a Docker seccomp profile (JSON).

    Default allow; the denied calls fail with EPERM, clone3 with ENOSYS (libc falls back to
    clone, whose flags a filter can read), clone with any CLONE_NEW* flag with EPERM, and
    socket() outside AF_UNIX/AF_INET/AF_INET6 with EAFNOSUPPORT. Only the native ABI is
    listed, so calls through a foreign one (i386, x32) are refused.
    """
    arch = _SCMP_ARCH.get(machine or platform.machine())
    if arch is None:
        raise seccomp.UnsupportedArchitectureError(f"no seccomp profile for {machine!r}")
    rules: list[dict[str, Any]] = [
        {"names": list(seccomp.DENIED_SYSCALLS), "action": "SCMP_ACT_ERRNO", "errnoRet": _EPERM},
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": _ENOSYS},
    ]
    for bit in range(32):
        flag = 1 << bit
        if seccomp.CLONE_NEW_FLAGS & flag:
            rules.append(_rule("clone", _EPERM, 0, "SCMP_CMP_MASKED_EQ", flag, flag))
    for family in range(_MAX_FAMILY):
        if family not in seccomp.ALLOWED_SOCKET_FAMILIES:
            rules.append(_rule("socket", _EAFNOSUPPORT, 0, "SCMP_CMP_EQ", family))
    rules.append(_rule("socket", _EAFNOSUPPORT, 0, "SCMP_CMP_GE", _MAX_FAMILY))
    profile = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": [arch], "syscalls": rules}
    return json.dumps(profile, separators=(",", ":"))


def _rule(name: str, errno: int, index: int, op: str, value: int, two: int = 0) -> dict[str, Any]:
    argument = {"index": index, "value": value, "valueTwo": two, "op": op}
    return {"names": [name], "action": "SCMP_ACT_ERRNO", "errnoRet": errno, "args": [argument]}
