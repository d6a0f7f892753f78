"""A classic-BPF seccomp filter for sandboxed programs, built without libseccomp.

The filter is a deny list on top of bwrap's namespaces: it refuses the system calls that
exist only to administer a kernel, to cross process boundaries (ptrace and friends), to
make new namespaces, or that carry a history of kernel exploits (bpf, userfaultfd,
io_uring, perf, keyrings). Sockets are limited to AF_UNIX, AF_INET and AF_INET6, which
refuses netlink and packet sockets. Calls from a foreign ABI (i386 via int 0x80, x32) are
refused outright, because their numbers differ from the table checked here.
"""

from __future__ import annotations

import errno
import platform
import struct
from collections.abc import Iterable

__all__ = [
    "ALLOWED_SOCKET_FAMILIES",
    "CLONE_NEW_FLAGS",
    "DENIED_SYSCALLS",
    "UnsupportedArchitectureError",
    "build_filter",
    "native_arch",
]

# Classic BPF opcodes (linux/bpf_common.h) and seccomp return values (linux/seccomp.h).
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_RET_KILL_PROCESS = 0x80000000

# Offsets in struct seccomp_data: int nr; u32 arch; u64 ip; u64 args[6] (little endian).
_OFF_NR = 0
_OFF_ARCH = 4
_OFF_ARG0_LOW = 16

_X32_SYSCALL_BIT = 0x40000000
_CLONE_NEW_FLAGS = 0x7E020000  # NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
_ALLOWED_SOCKET_FAMILIES = (1, 2, 10)  # AF_UNIX, AF_INET, AF_INET6

_DENIED_NAMES = (
    # other processes
    *("ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd"),
    # namespaces and mounts
    *("unshare", "setns", "mount", "umount2", "pivot_root", "chroot"),
    *("open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr"),
    # large kernel attack surface
    *("keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd"),
    *("io_uring_setup", "io_uring_enter", "io_uring_register"),
    # host administration
    *("kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module"),
    *("open_by_handle_at", "name_to_handle_at", "fanotify_init", "lookup_dcookie"),
    *("swapon", "swapoff", "syslog", "acct", "reboot", "quotactl", "vhangup"),
    *("settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "iopl", "ioperm"),
)

#: The same policy by name, for backends that load it through another engine (docker).
DENIED_SYSCALLS = _DENIED_NAMES
CLONE_NEW_FLAGS = _CLONE_NEW_FLAGS
ALLOWED_SOCKET_FAMILIES = _ALLOWED_SOCKET_FAMILIES

_GENERIC_NEW_MOUNT_API = {
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "pidfd_getfd": 438,
    "mount_setattr": 442,
    "clone3": 435,
}

_X86_64 = {
    "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312,
    "unshare": 272, "setns": 308, "mount": 165, "umount2": 166, "pivot_root": 155,
    "chroot": 161, "keyctl": 250, "add_key": 248, "request_key": 249, "bpf": 321,
    "perf_event_open": 298, "userfaultfd": 323, "kexec_load": 246, "kexec_file_load": 320,
    "init_module": 175, "finit_module": 313, "delete_module": 176, "open_by_handle_at": 304,
    "name_to_handle_at": 303, "fanotify_init": 300, "lookup_dcookie": 212, "swapon": 167,
    "swapoff": 168, "syslog": 103, "acct": 163, "reboot": 169, "quotactl": 179,
    "vhangup": 153, "settimeofday": 164, "clock_settime": 227, "clock_adjtime": 305,
    "adjtimex": 159, "iopl": 172, "ioperm": 173, "clone": 56, "socket": 41,
    **_GENERIC_NEW_MOUNT_API,
}  # fmt: skip

_AARCH64 = {
    "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "kcmp": 272,
    "unshare": 97, "setns": 268, "mount": 40, "umount2": 39, "pivot_root": 41,
    "chroot": 51, "keyctl": 219, "add_key": 217, "request_key": 218, "bpf": 280,
    "perf_event_open": 241, "userfaultfd": 282, "kexec_load": 104, "kexec_file_load": 294,
    "init_module": 105, "finit_module": 273, "delete_module": 106, "open_by_handle_at": 265,
    "name_to_handle_at": 264, "fanotify_init": 262, "lookup_dcookie": 18, "swapon": 224,
    "swapoff": 225, "syslog": 116, "acct": 89, "reboot": 142, "quotactl": 60,
    "vhangup": 58, "settimeofday": 170, "clock_settime": 112, "clock_adjtime": 266,
    "adjtimex": 171, "clone": 220, "socket": 198,
    **_GENERIC_NEW_MOUNT_API,
}  # fmt: skip

# machine name -> (AUDIT_ARCH_* value, syscall table, has the x32 ABI)
_ARCHES = {
    "x86_64": (0xC000003E, _X86_64, True),
    "aarch64": (0xC00000B7, _AARCH64, False),
}


class UnsupportedArchitectureError(Exception):
    """No syscall table is known for this machine."""


def native_arch() -> str:
    """The machine name this process runs on, as the filter builder knows it."""
    return platform.machine()


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("<HBBI", code, jt, jf, k)


def _ret(value: int) -> bytes:
    return _insn(_RET_K, value)


def _deny_each(numbers: Iterable[int]) -> list[bytes]:
    program: list[bytes] = []
    for number in sorted(set(numbers)):
        program += [_insn(_JEQ_K, number, 0, 1), _ret(_RET_ERRNO | errno.EPERM)]
    return program


def _clone_rule(number: int) -> list[bytes]:
    """clone() with any CLONE_NEW* flag fails with EPERM; plain forks and threads pass."""
    return [
        _insn(_JEQ_K, number, 0, 4),
        _insn(_LD_W_ABS, _OFF_ARG0_LOW),
        _insn(_JSET_K, _CLONE_NEW_FLAGS, 0, 1),
        _ret(_RET_ERRNO | errno.EPERM),
        _ret(_RET_ALLOW),
    ]


def _socket_rule(number: int) -> list[bytes]:
    families = _ALLOWED_SOCKET_FAMILIES
    checks = [
        _insn(_JEQ_K, family, len(families) - index, 0) for index, family in enumerate(families)
    ]
    return [
        _insn(_JEQ_K, number, 0, len(checks) + 3),
        _insn(_LD_W_ABS, _OFF_ARG0_LOW),
        *checks,
        _ret(_RET_ERRNO | errno.EAFNOSUPPORT),
        _ret(_RET_ALLOW),
    ]


def build_filter(machine: str | None = None) -> bytes:
    """Return the filter as the raw `struct sock_filter[]` that `bwrap --seccomp FD` reads."""
    arch_name = machine or native_arch()
    if arch_name not in _ARCHES:
        raise UnsupportedArchitectureError(f"no seccomp syscall table for {arch_name!r}")
    audit_arch, table, has_x32 = _ARCHES[arch_name]
    program = [
        _insn(_LD_W_ABS, _OFF_ARCH),
        _insn(_JEQ_K, audit_arch, 1, 0),
        _ret(_RET_KILL_PROCESS),
        _insn(_LD_W_ABS, _OFF_NR),
    ]
    if has_x32:
        program += [_insn(_JGE_K, _X32_SYSCALL_BIT, 0, 1), _ret(_RET_ERRNO | errno.ENOSYS)]
    # clone3 passes its flags in memory a filter cannot read: ENOSYS makes libc use clone().
    program += [_insn(_JEQ_K, table["clone3"], 0, 1), _ret(_RET_ERRNO | errno.ENOSYS)]
    program += _deny_each(table[name] for name in _DENIED_NAMES if name in table)
    program += _clone_rule(table["clone"])
    program += _socket_rule(table["socket"])
    program.append(_ret(_RET_ALLOW))
    return b"".join(program)
