"""The bwrap command line, the boot program's code and the limits value type, checked without
running a sandbox."""

from __future__ import annotations

import marshal
from dataclasses import replace

import pytest

from evalmesh_executor.sandbox import SandboxLimits, SandboxUnavailableError
from evalmesh_executor.sandbox.bwrap import PYTHON
from evalmesh_executor.sandbox.bwrap.layout import (
    BOOT_MARKER,
    BOOT_SOURCE,
    BwrapFds,
    Rlimits,
    boot_loader,
    bwrap_argv,
)
from evalmesh_executor.sandbox.bwrap.runtime import boot_code

FDS = BwrapFds(etc={"/etc/passwd": 11}, block=12, status=13, seccomp=14)


def argv(scratch: int | None = 1 << 20) -> list[str]:
    return bwrap_argv(
        "/usr/bin/bwrap",
        PYTHON,
        root_links=[("--symlink", "usr/lib", "/lib")],
        scratch_bytes=scratch,
        fds=FDS,
        rlimits=Rlimits(nofile=64, fsize=1 << 20),
        boot_bytes=1234,
    )


def pairs(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, arg in enumerate(args) if arg == flag]


def test_every_namespace_is_unshared_and_the_sandbox_cannot_outlive_its_parent() -> None:
    args = argv()
    for flag in ("--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent"):
        assert flag in args
    assert "--share-net" not in args
    assert "--new-session" in args
    assert "--clearenv" in args
    assert pairs(args, "--uid") == ["65534"]
    assert pairs(args, "--gid") == ["65534"]


def test_host_paths_are_bound_read_only_and_never_writable() -> None:
    args = argv()
    assert not {"--bind", "--dev-bind", "--bind-try", "--bind-data", "--file"} & set(args)
    assert pairs(args, "--ro-bind") == ["/usr"]
    assert "/etc" not in pairs(args, "--ro-bind"), "no host /etc"
    assert pairs(args, "--ro-bind-data") == ["11"]
    assert pairs(args, "--remount-ro")[-1] == "/"


def test_scratch_tmpfs_are_size_capped_when_bwrap_supports_it() -> None:
    args = argv()
    assert pairs(args, "--size") == [str(1 << 20)] * 2 + [str(2 << 20)]
    assert pairs(argv(scratch=None), "--size") == []
    assert pairs(args, "--tmpfs")[-3:] == ["/tmp", "/dev/shm", "/job"]
    assert pairs(args, "--perms") == ["0555"]


def test_the_program_is_the_boot_program_told_the_jobs_rlimits() -> None:
    tail = argv()[argv().index("--") + 1 :]
    loader = boot_loader(1234)
    assert tail == ["/usr/bin/python3", "-I", "-B", "-u", "-c", loader, "64", str(1 << 20)]


def test_the_sandbox_is_told_its_descriptors_by_number() -> None:
    args = argv()
    assert pairs(args, "--block-fd") == ["12"]
    assert pairs(args, "--json-status-fd") == ["13"]
    assert pairs(args, "--seccomp") == ["14"]


@pytest.mark.parametrize(
    "bad",
    [
        {"wall_timeout": 0},
        {"memory_bytes": -1},
        {"max_processes": 1.5},
        {"max_output_bytes": True},
        {"cpu_quota": "1"},
    ],
)
def test_limits_must_be_positive_numbers_of_the_right_kind(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="positive"):
        SandboxLimits(**bad)  # type: ignore[arg-type]


async def test_the_boot_program_is_compiled_by_the_runtimes_own_interpreter() -> None:
    code = marshal.loads(await boot_code(PYTHON, BOOT_SOURCE))
    namespace: dict[str, object] = {"__name__": "__main__"}
    exec(code, namespace)  # defines the boot program's function; runs nothing
    assert callable(namespace[BOOT_MARKER.decode()])
    assert BOOT_MARKER.decode() in boot_loader(len(BOOT_SOURCE))


async def test_a_runtime_whose_interpreter_cannot_compile_the_boot_program_is_unavailable() -> None:
    broken = replace(PYTHON, name="broken", argv=("/bin/false",))
    with pytest.raises(SandboxUnavailableError, match="cannot compile the boot program"):
        await boot_code(broken, BOOT_SOURCE)
