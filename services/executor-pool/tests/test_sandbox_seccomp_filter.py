"""The seccomp program decides as intended, checked by evaluating its BPF in Python.

Evaluating the program (instead of only running it on this x86_64 host) also covers the
aarch64 table, and catches a wrong jump offset in any rule.
"""

from __future__ import annotations

import errno
import struct

import pytest

from evalmesh_executor.sandbox.core.seccomp import build_filter

ALLOW = 0x7FFF0000
KILL = 0x80000000
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
NR = {
    "x86_64": {"read": 0, "ptrace": 101, "clone": 56, "clone3": 435, "socket": 41, "bpf": 321,
               "unshare": 272, "mount": 165, "keyctl": 250, "fork": 57, "io_uring_setup": 425},
    "aarch64": {"read": 63, "ptrace": 117, "clone": 220, "clone3": 435, "socket": 198,
                "bpf": 280, "unshare": 97, "mount": 40, "keyctl": 219, "io_uring_setup": 425},
}  # fmt: skip
CLONE_THREAD_FLAGS = 0x003D0F00  # what glibc passes for pthread_create
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000


def evaluate(program: bytes, nr: int, arch: int, arg0: int = 0) -> int:
    """Run a classic BPF seccomp program over one seccomp_data; return its verdict."""
    data = struct.pack("<iIQ6Q", nr, arch, 0, arg0, 0, 0, 0, 0, 0)
    insns: list[tuple[int, int, int, int]] = [
        struct.unpack_from("<HBBI", program, i) for i in range(0, len(program), 8)
    ]
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == 0x20:  # ld [k]
            acc = int(struct.unpack_from("<I", data, k)[0])
        elif code == 0x06:  # ret k
            return k
        else:
            taken = {0x15: acc == k, 0x35: acc >= k, 0x45: bool(acc & k)}[code]
            pc += jt if taken else jf
        pc += 1


def eperm(value: int) -> int:
    return 0x00050000 | value


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_harmless_calls_are_allowed_and_dangerous_ones_refused(machine: str) -> None:
    program, arch, nr = build_filter(machine), AUDIT_ARCH[machine], NR[machine]
    assert len(program) % 8 == 0
    assert evaluate(program, nr["read"], arch) == ALLOW
    for name in ("ptrace", "bpf", "unshare", "mount", "keyctl", "io_uring_setup"):
        assert evaluate(program, nr[name], arch) == eperm(errno.EPERM), name


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_clone_may_make_threads_and_processes_but_no_namespace(machine: str) -> None:
    program, arch, clone = build_filter(machine), AUDIT_ARCH[machine], NR[machine]["clone"]
    assert evaluate(program, clone, arch, CLONE_THREAD_FLAGS) == ALLOW
    assert evaluate(program, clone, arch, 17) == ALLOW  # fork(): SIGCHLD only
    for flag in (CLONE_NEWUSER, CLONE_NEWNET):
        assert evaluate(program, clone, arch, 17 | flag) == eperm(errno.EPERM)
    assert evaluate(program, NR[machine]["clone3"], arch) == eperm(errno.ENOSYS)


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
@pytest.mark.parametrize(
    ("family", "allowed"), [(1, True), (2, True), (10, True), (16, False), (17, False)]
)
def test_only_unix_and_ip_sockets_can_be_created(machine: str, family: int, allowed: bool) -> None:
    program, arch = build_filter(machine), AUDIT_ARCH[machine]
    verdict = evaluate(program, NR[machine]["socket"], arch, family)
    assert verdict == (ALLOW if allowed else eperm(errno.EAFNOSUPPORT))


def test_foreign_abis_are_refused() -> None:
    program = build_filter("x86_64")
    assert evaluate(program, 0, 0x40000003) == KILL  # i386 via int 0x80
    assert evaluate(program, 0x40000000, AUDIT_ARCH["x86_64"]) == eperm(errno.ENOSYS)  # x32
