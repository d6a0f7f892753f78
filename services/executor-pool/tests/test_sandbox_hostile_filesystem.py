"""Hostile programs against the filesystem: H01, H08, H19, H21, H27, H28, H29."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
from pathlib import Path
from textwrap import dedent

import pytest
from sandbox_helpers import MiB, Runner, read_host, run_until_printed

from evalmesh_executor.sandbox import SandboxOutcome


@pytest.mark.parametrize("target", ["/etc/shadow", "HOST_FILE"])
async def test_h01_symlinks_planted_by_a_job_never_reach_host_files(
    run: Runner, tmp_path: Path, target: str
) -> None:
    host_file = tmp_path / "executor-state.json"
    host_file.write_text("executor state\n")
    before = host_file.stat()
    target = str(host_file) if target == "HOST_FILE" else target
    code = dedent(f"""
        import os
        names = ["/tmp/main.py", "/tmp/stdout", "/tmp/stderr", "/tmp/result.json",
                 "/tmp/output", "/dev/shm/result", "/tmp/.bash_history"]
        for name in names:
            os.symlink({target!r}, name)
        for path in [{target!r}, *names]:
            try:
                print("READ", open(path).read()[:40])
            except OSError as e:
                print("refused", path, e.errno)
            try:
                open(path, "a").write("pwned")
                print("WROTE", path)
            except OSError as e:
                print("refused", path, e.errno)
        try:
            os.replace("/tmp/stdout", "/job/main.py")
        except OSError as e:
            print("refused replace", e.errno)
    """)
    result = await run(code)
    assert result.outcome is SandboxOutcome.EXITED
    assert b"READ" not in result.stdout
    assert b"WROTE" not in result.stdout
    assert host_file.read_text() == "executor state\n"
    assert host_file.stat().st_mtime_ns == before.st_mtime_ns
    assert (await run("print('next job fine')")).stdout == b"next job fine\n"


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("/proc/sysrq-trigger", "h"),
        ("/proc/sys/kernel/printk_ratelimit", "7"),
        ("/proc/sys/vm/drop_caches", "3"),
        ("/proc/sys/kernel/hostname", "pwned"),
        ("/proc/sys/net/ipv4/ip_forward", "1"),
        ("/sys/kernel/uevent_helper", "/tmp/x"),
        ("/proc/self/oom_score_adj", "-1000"),
    ],
)
async def test_h08_kernel_tunables_cannot_be_written(run: Runner, path: str, value: str) -> None:
    host_ratelimit = read_host("/proc/sys/kernel/printk_ratelimit")
    code = dedent(f"""
        try:
            with open({path!r}, "w") as f:
                f.write({value!r})
            print("WROTE")
        except OSError as e:
            print("refused", e.errno)
    """)
    result = await run(code)
    assert result.stdout.startswith(b"refused"), result.stdout
    assert read_host("/proc/sys/kernel/printk_ratelimit") == host_ratelimit


async def test_h19_a_later_job_sees_nothing_an_earlier_job_wrote(run: Runner) -> None:
    writer = dedent("""
        import os
        for d in ["/tmp", "/dev/shm", "/var/tmp", os.environ["HOME"], "/"]:
            try:
                open(os.path.join(d, "left-by-a"), "w").write("secret")
                print("wrote", d)
            except OSError as e:
                print("refused", d, e.errno)
    """)
    reader = dedent("""
        import os
        for d in ["/tmp", "/dev/shm", "/var/tmp", os.environ["HOME"], "/"]:
            try:
                print(d, sorted(os.listdir(d)))
            except OSError as e:
                print(d, "missing", e.errno)
    """)
    first = await run(writer)
    assert b"wrote /tmp" in first.stdout
    assert b"wrote /dev/shm" in first.stdout
    second = await run(reader)
    assert b"left-by-a" not in second.stdout
    assert b"/tmp []" in second.stdout
    assert b"/dev/shm []" in second.stdout


async def test_h21_other_jobs_are_invisible_through_proc_root_and_cwd(run: Runner) -> None:
    holder = dedent("""
        import time
        open("/tmp/secret-of-a", "w").write("A")
        print("ready", flush=True)
        time.sleep(60)
    """)
    prober = dedent("""
        import os
        pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
        print("pids", pids)
        for pid in list(pids) + list(range(1, 400)):
            for rel in ("root/tmp", "cwd"):
                try:
                    if "secret-of-a" in os.listdir(f"/proc/{pid}/{rel}"):
                        print("FOUND", pid, rel)
                except OSError:
                    pass
    """)
    # The probe runs while the holder is known to hold its file, however slow the host.
    release = asyncio.Event()
    holding = await run_until_printed(run, holder, b"ready", cancel=release, wall_timeout=30)
    probe = await run(prober)
    release.set()
    assert (await holding).outcome is SandboxOutcome.CANCELLED
    assert b"FOUND" not in probe.stdout
    assert probe.stdout.startswith(b"pids [1, 2]"), probe.stdout


WRITE_UNTIL_FULL = """
import os
written, err = 0, None
block = b"z" * (1 << 20)
try:
    with open({path!r}, "wb") as f:
        for _ in range(2048):
            f.write(block)
            f.flush()
            written += len(block)
except OSError as e:
    err = e.errno
print(written, err)
"""


@pytest.mark.parametrize("path", ["/tmp/big", "/dev/shm/big"])
async def test_h27_writing_2_gib_to_scratch_stops_at_the_scratch_cap(
    run: Runner, path: str
) -> None:
    result = await run(WRITE_UNTIL_FULL.format(path=path), scratch_bytes=8 * MiB)
    written, err = result.stdout.split()
    assert result.outcome is SandboxOutcome.EXITED
    assert int(err) == errno.ENOSPC
    assert int(written) <= 8 * MiB
    assert result.peak_memory_bytes >= int(written), "tmpfs pages are charged to the job"


async def test_h27_scratch_larger_than_memory_ends_as_memory_limit(run: Runner) -> None:
    code = WRITE_UNTIL_FULL.format(path="/dev/shm/big")
    result = await run(code, scratch_bytes=1024 * MiB, max_file_size_bytes=4096 * MiB)
    assert result.outcome is SandboxOutcome.MEMORY_LIMIT


async def test_h28_a_huge_file_or_fallocate_is_stopped_and_host_disk_unchanged(
    run: Runner,
) -> None:
    free_before = os.statvfs("/").f_bavail * os.statvfs("/").f_frsize
    code = WRITE_UNTIL_FULL.format(path="/tmp/huge") + dedent("""
        fd = os.open("/tmp/falloc", os.O_CREAT | os.O_WRONLY)
        try:
            os.posix_fallocate(fd, 0, 1 << 40)
            print("ALLOCATED")
        except OSError as e:
            print("fallocate refused", e.errno)
    """)
    result = await run(code, scratch_bytes=64 * MiB, max_file_size_bytes=4 * MiB)
    first, second = result.stdout.splitlines()
    written, err = first.split()
    assert int(written) <= 4 * MiB
    assert int(err) == errno.EFBIG
    assert second.startswith(b"fallocate refused")
    free_after = os.statvfs("/").f_bavail * os.statvfs("/").f_frsize
    # One-sided: other processes on a shared host free space too; the job could only take it.
    assert free_before - free_after < 64 * MiB


@pytest.mark.parametrize("how", ["seek-write", "truncate"])
async def test_h29_a_sparse_terabyte_file_is_refused(run: Runner, how: str) -> None:
    action = 'f.seek(1 << 40); f.write(b"x")' if how == "seek-write" else "f.truncate(1 << 40)"
    code = dedent(f"""
        try:
            with open("/tmp/sparse", "wb") as f:
                {action}
            print("CREATED")
        except OSError as e:
            print("refused", e.errno)
    """)
    result = await run(code)
    assert result.stdout.split() == [b"refused", str(errno.EFBIG).encode()]


# Job A takes every kind of lock it can on a runtime file, then waits to be cancelled.
LOCK_HOLDER = dedent("""
    import fcntl, os, struct, time
    path = os.__file__
    f = open(path, "rb")
    fcntl.flock(f, fcntl.LOCK_EX)  # flock(2)
    fcntl.lockf(f, fcntl.LOCK_SH)  # POSIX record lock (read: the file is read-only)
    ofd = open(path, "rb")
    F_OFD_SETLK = 37
    fcntl.fcntl(ofd, F_OFD_SETLK, struct.pack("hhqqi", fcntl.F_RDLCK, 0, 0, 0, 0))
    try:
        fcntl.fcntl(f, fcntl.F_SETLEASE, fcntl.F_RDLCK)
        print("lease taken")
    except OSError as e:
        print("lease refused", e.errno)
    print("locked", path, flush=True)
    time.sleep(60)
""")

# Job B looks for A's locks on the same path.
LOCK_PROBE = dedent("""
    import fcntl, os, struct
    f = open(os.__file__, "rb")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        print("flock free")
    except OSError:
        print("flock HELD")
    query = struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 0, 0)
    kind = struct.unpack("hhqqi", fcntl.fcntl(f, fcntl.F_GETLK, query))[0]
    print("posix free" if kind == fcntl.F_UNLCK else "posix HELD")
    F_OFD_GETLK = 36
    kind = struct.unpack("hhqqi", fcntl.fcntl(f, F_OFD_GETLK, query))[0]
    print("ofd free" if kind == fcntl.F_UNLCK else "ofd HELD")
""")


async def test_locks_on_runtime_files_are_the_jobs_own_and_reach_no_other_job_or_the_host(
    run: Runner, backend: str
) -> None:
    holder = await run_until_printed(run, LOCK_HOLDER, b"locked", wall_timeout=30)
    try:
        probe = await run(LOCK_PROBE)
        assert probe.stdout.split(b"\n")[:3] == [b"flock free", b"posix free", b"ofd free"]
        if backend == "bwrap":  # the runtime is the host's own /usr: the host sees no lock
            _host_takes_the_lock_at_once(Path("/usr/lib") / Path(os.__file__).parent.name / "os.py")
    finally:
        holder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await holder


# A job watches a runtime file with inotify for a while, then reads it itself (the control).
INOTIFY_WATCH = dedent("""
    import ctypes, json, os, select, time
    libc = ctypes.CDLL(None, use_errno=True)
    IN_ACCESS, IN_OPEN, IN_NONBLOCK = 0x1, 0x20, 0o4000
    fd = libc.inotify_init1(IN_NONBLOCK)
    path = json.__file__
    print("watch", libc.inotify_add_watch(fd, path.encode(), IN_ACCESS | IN_OPEN) >= 0, flush=True)
    seen, deadline = b"", time.monotonic() + 5
    while (left := deadline - time.monotonic()) > 0:
        if select.select([fd], [], [], left)[0]:
            seen += os.read(fd, 4096)
    print("others", len(seen))
    open(path, "rb").read()
    print("own", bool(select.select([fd], [], [], 1)[0]))
""")
INOTIFY_READER = "import json\nprint(len(open(json.__file__, 'rb').read()) > 0)"


async def test_file_notifications_on_runtime_files_reach_no_other_job(
    run: Runner, backend: str
) -> None:
    watcher = await run_until_printed(run, INOTIFY_WATCH, b"watch True", wall_timeout=15)
    reader = await run(INOTIFY_READER)
    assert reader.stdout == b"True\n"
    if backend == "bwrap":  # the host reads the same file too
        _host_reads(Path("/usr/lib") / Path(json.__file__).parent.parent.name / "json/__init__.py")
    result = await watcher
    assert result.stdout.splitlines()[1:] == [b"others 0", b"own True"], result.stdout


def _host_takes_the_lock_at_once(path: Path) -> None:
    with path.open("rb") as host_file:
        fcntl.flock(host_file, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if the job's lock held
        fcntl.flock(host_file, fcntl.LOCK_UN)


def _host_reads(path: Path) -> None:
    assert path.read_bytes()
