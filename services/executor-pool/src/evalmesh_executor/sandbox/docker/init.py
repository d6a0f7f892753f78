"""The docker backend's pid 1 inside each container: wait for the job, run it, report its end.

Docker's own init (tini) exits as soon as the program does; the engine then removes the
container's cgroup, and with it the CPU time and peak memory of the job. So the container runs
this program instead, as pid 1 (which no job process can signal or ptrace), with the image's
interpreter: ``python3 -I -B -u -c <this file> IDLE_S CODE_FILENAME`` (``protocol.init_argv``).
It uses the standard library only, and nothing of the executor.

1. It waits for its one job on the container's stdin: a hand-over header (code and stdin
   lengths, the backstop), the code, then the job's stdin, whose bytes go into a read-only
   memfd (empty stdin is EOF at once, and nothing ever blocks on writing it). A warm
   container is started ahead of demand and waits here; so the container's settings never
   depend on the code, and the job's clock starts at the hand-over, not at the start.
2. It forks the program (pid 2, a session of its own), whose stdout and stderr are pipes.
   pid 1 is the only writer of the container's stdout: it relays the pipes there in frames
   (`O`/`E` + 4-byte length + bytes), so job output can never be mistaken for a control frame.
3. When the program exits, every other process of the job is killed (as bwrap's pid 1 does)
   and reaped; pid 1 then sends the exit status (`X` frame) with the container's cgroup
   accounting (CPU time since the hand-over; the peak includes pid 1's own few MiB) and
   waits to be removed. A `K` on stdin has it kill the job and report the same way.
4. The rest of the container's stdin is a lifeline: EOF there means the executor that
   attached is gone, so the job (or the wait for one) ends at once. A wall-clock backstop
   counted from the hand-over, and an idle limit before it, do the same.

A job process can end this init only by making the job end (SIGKILL from inside the pid
namespace does not reach pid 1; it is not dumpable, and seccomp denies ptrace).

The forked job runs its code in this module's namespace, ``__main__``, emptied first of
everything of this program, so it sees what a ``python3 -I -c`` script sees there. Imported
(by the executor, or a test) this module only defines; it refuses to run unless it is pid 1,
since killing "every other process" anywhere else would mean the host's.
"""

from __future__ import annotations

import linecache
import os
import select
import selectors
import signal
import struct
import sys
import time

TYPE_CHECKING = False  # the container's interpreter need not import typing for this
if TYPE_CHECKING:
    from types import CodeType

__all__ = [
    "FRAME",
    "GONE_EXIT",
    "HANDOVER",
    "IDLE_EXIT",
    "NOT_PID_1_EXIT",
    "TRUNCATED_EXIT",
    "accounting",
    "counters",
    "exit_report",
]

#: Frame header: kind (b"O" stdout, b"E" stderr, b"X" exit status) and payload length.
FRAME = struct.Struct(">cI")
#: The hand-over header: code length, stdin length (bytes), backstop (s).
HANDOVER = struct.Struct(">QQd")
#: pid 1's own exit statuses: no job came within the idle limit; stdin ended mid hand-over;
#: the executor went away or the backstop passed (the job killed); not run as pid 1.
IDLE_EXIT = 75
TRUNCATED_EXIT = 70
GONE_EXIT = 137
NOT_PID_1_EXIT = 78

CGROUP_ROOT = "/sys/fs/cgroup"
_BLOCK = 1 << 20
_READ = 65536
_HOLD_S = 30.0
# What a script's __main__ holds before its first line runs, besides __doc__ (None here);
# everything else in the namespace is this program's and goes before the job's code runs.
_KEPT = frozenset(
    ("__name__", "__builtins__", "__loader__", "__spec__", "__package__", "__annotations__")
)


def read_exact(size: int) -> bytes:
    """``size`` bytes of stdin; pid 1 exits if it ends first (the executor is gone)."""
    data = bytearray()
    while len(data) < size:
        block = os.read(0, min(size - len(data), _BLOCK))
        if not block:
            os._exit(TRUNCATED_EXIT)
        data += block
    return bytes(data)


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (blocking)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def frame(kind: bytes, payload: bytes) -> None:
    """Send one frame on the container's stdout."""
    write_all(1, FRAME.pack(kind, len(payload)) + payload)


def read_file(path: str) -> str | None:
    """The text of a (cgroup) file, or None where it cannot be read."""
    try:
        with open(path) as file:
            return file.read()
    except (OSError, ValueError):
        return None


def field(text: str | None, key: str) -> int:
    """``key``'s value in a flat-keyed file (``key value`` lines); -1 if absent."""
    for line in (text or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return -1


def number(text: str | None) -> int:
    """A file holding one number; -1 if it does not."""
    return int(text) if text and text.strip().isdigit() else -1


def counters(root: str = CGROUP_ROOT) -> tuple[int, int, int]:
    """The container's own cgroup, mounted read-only: (cpu ns, peak bytes, OOM kills), each
    -1 where unknown. cgroup v2 when ``root`` has cpu.stat, else v1."""
    v2 = read_file(root + "/cpu.stat")
    if v2 is not None:
        usec = field(v2, "usage_usec")
        return (
            usec * 1000 if usec >= 0 else -1,
            number(read_file(root + "/memory.peak")),
            field(read_file(root + "/memory.events"), "oom_kill"),
        )
    return (
        number(read_file(root + "/cpuacct/cpuacct.usage")),
        number(read_file(root + "/memory/memory.max_usage_in_bytes")),
        field(read_file(root + "/memory/memory.oom_control"), "oom_kill"),
    )


def accounting(cpu_before: int, root: str = CGROUP_ROOT) -> bytes:
    """The exit frame's counters, final once only pid 1 is left (its peak includes pid 1's
    own few MiB); the CPU time is counted from ``cpu_before``, read at the hand-over."""
    cpu, peak, oom = counters(root)
    if cpu >= 0 and cpu_before >= 0:
        cpu = max(0, cpu - cpu_before)
    return b"cpu_ns=%d peak=%d oom_kills=%d" % (cpu, peak, oom)


def exit_report(status: int | None, killed: bool) -> tuple[bytes, int]:
    """How the job ended, as the exit frame says it, and pid 1's exit status to match.

    ``status`` is the main process's wait status; ``killed``, whether pid 1 killed the job on
    the executor's request (which only a program that exited by itself outran).
    """
    if status is None or (killed and not os.WIFEXITED(status)):
        return b"killed 9", 137
    if os.WIFSIGNALED(status):
        return b"signal %d" % os.WTERMSIG(status), 128 + os.WTERMSIG(status)
    return b"exit %d" % os.WEXITSTATUS(status), os.WEXITSTATUS(status)


def dumpable(flag: int) -> None:
    """PR_SET_DUMPABLE: pid 1 is not (no ptrace, no /proc/1/fd or /proc/1/mem), the job is."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(4, flag, 0, 0, 0)
    except Exception:
        return  # an image without ctypes: pid 1 is still out of the job's reach (seccomp)


def kill_all() -> None:
    """SIGKILL every process of the container but pid 1."""
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        return  # none is left


def stdin_file(data: bytes) -> int:
    """A read-only descriptor of an in-memory file holding the job's stdin."""
    memfd = os.memfd_create("stdin")
    write_all(memfd, data)
    readonly = os.open(f"/proc/self/fd/{memfd}", os.O_RDONLY)
    os.close(memfd)
    return readonly


def _score_for_oom_killer() -> None:
    try:  # the job, not pid 1, is what the OOM killer should pick
        with open("/proc/self/oom_score_adj", "w") as adj:
            adj.write("1000")
    except OSError:
        return


def become_job(code: bytes, name: str, stdin: int, out: int, err: int) -> CodeType:
    """In the forked child: take the job's descriptors, forget this program, and return the
    job's code, compiled as ``name``, to run as the script."""
    os.setsid()
    os.dup2(stdin, 0)
    os.dup2(out, 1)
    os.dup2(err, 2)
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    dumpable(1)
    _score_for_oom_killer()
    os.environ.pop("HOSTNAME", None)  # set by the engine; not part of the job's environment
    sys.argv[:] = [name]
    lines = code.decode(errors="replace").splitlines(True)
    linecache.cache[name] = (len(code), None, lines, name)
    program = compile(code, name, "exec", dont_inherit=True)
    namespace = globals()
    for key in [key for key in namespace if key not in _KEPT]:
        del namespace[key]
    namespace["__doc__"] = None
    return program


def _drain(fd: int) -> None:
    while True:
        try:
            if not os.read(fd, 512):
                return
        except BlockingIOError:
            return


def relay(main: int, out_r: int, err_r: int, deadline: float) -> tuple[int | None, bool]:
    """Relay the job's output in frames until both pipes are closed and every process of the
    job is reaped; return the main process's wait status and whether pid 1 killed the job on
    request. Exits at once (killing the job) when the executor is gone or at ``deadline``."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector = selectors.DefaultSelector()
    selector.register(out_r, selectors.EVENT_READ, b"O")
    selector.register(err_r, selectors.EVENT_READ, b"E")
    selector.register(wake_r, selectors.EVENT_READ, b"")
    selector.register(0, selectors.EVENT_READ, b"L")
    status = None
    killed = False
    pipes = 2
    children = True
    while pipes or children:
        if status is not None or killed:
            kill_all()
        while children:
            try:
                pid, raw = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                children = False
                break
            if pid == 0:
                break
            if pid == main:
                status = raw
                kill_all()
        if not (pipes or children):
            break
        timeout = deadline - time.monotonic()
        if timeout <= 0:
            kill_all()
            os._exit(GONE_EXIT)
        if status is not None or killed:
            timeout = min(timeout, 0.1)
        for key, _ in selector.select(timeout):
            if key.data in (b"O", b"E"):
                data = os.read(key.fd, _READ)
                if data:
                    frame(key.data, data)
                else:
                    selector.unregister(key.fd)
                    os.close(key.fd)
                    pipes -= 1
            elif key.data == b"L":
                command = os.read(0, _READ)
                if not command:  # the executor is gone
                    kill_all()
                    os._exit(GONE_EXIT)
                killed = killed or b"K" in command
            else:
                _drain(wake_r)
    return status, killed


def hold(seconds: float = _HOLD_S) -> None:
    """Hold the container until the executor removes it, detaches, or is clearly gone."""
    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ)
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        if selector.select(until - time.monotonic()) and not os.read(0, _READ):
            break


def _evalmesh_init() -> CodeType:
    """pid 1's whole life. Returns only in the forked job, with the job's program."""
    if os.getpid() != 1:
        os._exit(NOT_PID_1_EXIT)
    idle, name = float(sys.argv[1]), sys.argv[2]
    dumpable(0)  # the job can neither ptrace pid 1 nor open /proc/1/fd or /proc/1/mem
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    # Started ahead of demand, pid 1 waits here for its one job: the hand-over header, then
    # the code and the job's stdin. EOF (the executor is gone) or the idle limit ends it.
    if not select.select([0], [], [], idle)[0]:
        os._exit(IDLE_EXIT)
    code_len, stdin_len, backstop = HANDOVER.unpack(read_exact(HANDOVER.size))
    cpu_before = counters()[0]  # what pid 1 used before the hand-over is not the job's
    code = read_exact(code_len)
    stdin = stdin_file(read_exact(stdin_len))
    main = os.fork()
    if main == 0:
        return become_job(code, name, stdin, out_w, err_w)
    del code
    for fd in (stdin, out_w, err_w):
        os.close(fd)
    status, killed = relay(main, out_r, err_r, time.monotonic() + backstop)
    how, exit_code = exit_report(status, killed)
    frame(b"X", how + b" " + accounting(cpu_before))
    hold()
    os._exit(exit_code)


if __name__ == "__main__":
    exec(_evalmesh_init())  # noqa: S102 - this is the sandbox: running the job is its purpose
