"""The docker backend's pid 1 inside each container, and the host side of its protocol.

Docker's own init (tini) exits as soon as the program does; the engine then removes the
container's cgroup, and with it the CPU time and peak memory of the job. So the container
runs this small Python init instead, as pid 1 (which no job process can signal or ptrace):

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
   waits to be removed.
4. The rest of the container's stdin is a lifeline: EOF there means the executor that
   attached is gone, so the job (or the wait for one) ends at once. A wall-clock backstop
   counted from the hand-over, and an idle limit before it, do the same.

A job process can end this init only by making the job end (SIGKILL from inside the pid
namespace does not reach pid 1; it is not dumpable, and seccomp denies ptrace).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .models import CODE_FILENAME, SandboxError

__all__ = [
    "CODE_FILENAME",
    "HANDOVER",
    "HEADER",
    "INIT_PROGRAM",
    "ExitFrame",
    "FrameParser",
    "handover",
    "init_argv",
]

#: Frame header: kind (b"O" stdout, b"E" stderr, b"X" exit status) and payload length.
HEADER = struct.Struct(">cI")

#: The hand-over header pid 1 waits for: code length, stdin length (bytes), backstop (s).
HANDOVER = struct.Struct(">QQd")

_MAX_FRAME = 1 << 20

INIT_PROGRAM = r"""
import os, sys

def _evalmesh_init():
    import select, selectors, signal, struct, time
    idle = float(sys.argv[1])
    header = struct.Struct(">cI")

    def read_exact(n):
        data = bytearray()
        while len(data) < n:
            block = os.read(0, min(n - len(data), 1 << 20))
            if not block:
                os._exit(70)
            data += block
        return bytes(data)

    def write_all(fd, data):
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]

    def read_file(path):
        try:
            with open(path) as f:
                return f.read()
        except (OSError, ValueError):
            return None

    def field(text, key):
        for line in (text or "").splitlines():
            name, _, value = line.partition(" ")
            if name == key and value.strip().isdigit():
                return int(value)
        return -1

    def number(text):
        return int(text) if text and text.strip().isdigit() else -1

    def counters():
        # The container's own cgroup, mounted read-only: (cpu ns, peak bytes, OOM kills).
        v2 = read_file("/sys/fs/cgroup/cpu.stat")
        if v2 is not None:
            usec = field(v2, "usage_usec")
            return (
                usec * 1000 if usec >= 0 else -1,
                number(read_file("/sys/fs/cgroup/memory.peak")),
                field(read_file("/sys/fs/cgroup/memory.events"), "oom_kill"),
            )
        return (
            number(read_file("/sys/fs/cgroup/cpuacct/cpuacct.usage")),
            number(read_file("/sys/fs/cgroup/memory/memory.max_usage_in_bytes")),
            field(read_file("/sys/fs/cgroup/memory/memory.oom_control"), "oom_kill"),
        )

    def accounting():
        # Final now that only pid 1 is left. The peak includes pid 1's own few MiB.
        cpu, peak, oom = counters()
        if cpu >= 0 and cpu_before >= 0:
            cpu = max(0, cpu - cpu_before)
        return b"cpu_ns=%d peak=%d oom_kills=%d" % (cpu, peak, oom)

    def dumpable(flag):
        try:
            import ctypes
            ctypes.CDLL(None).prctl(4, flag, 0, 0, 0)  # PR_SET_DUMPABLE
        except Exception:
            pass

    dumpable(0)  # the job can neither ptrace pid 1 nor open /proc/1/fd or /proc/1/mem
    import linecache
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    # Started ahead of demand, pid 1 waits here for its one job: the hand-over header, then
    # the code and the job's stdin. EOF (the executor is gone) or the idle limit ends it.
    if not select.select([0], [], [], idle)[0]:
        os._exit(75)
    code_len, stdin_len, backstop = struct.unpack(">QQd", read_exact(24))  # HANDOVER
    cpu_before = counters()[0]  # what pid 1 used before the hand-over is not the job's
    code = read_exact(code_len)
    memfd = os.memfd_create("stdin")
    write_all(memfd, read_exact(stdin_len))
    stdin = os.open("/proc/self/fd/%d" % memfd, os.O_RDONLY)
    os.close(memfd)
    main = os.fork()
    if main == 0:
        os.setsid()
        os.dup2(stdin, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        dumpable(1)
        try:  # the job, not pid 1, is what the OOM killer should pick
            with open("/proc/self/oom_score_adj", "w") as adj:
                adj.write("1000")
        except OSError:
            pass
        os.environ.pop("HOSTNAME", None)  # set by the engine; not part of the job's environment
        name = sys.argv[2]
        sys.argv[:] = [name]
        lines = code.decode(errors="replace").splitlines(True)
        linecache.cache[name] = (len(code), None, lines, name)
        program = compile(code, name, "exec", dont_inherit=True)
        del globals()["os"], globals()["sys"]
        return program
    del code
    for fd in (stdin, out_w, err_w):
        os.close(fd)

    def frame(kind, payload):
        write_all(1, header.pack(kind, len(payload)) + payload)

    def kill_all():
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass

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
    deadline = time.monotonic() + backstop
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
            os._exit(137)
        if status is not None or killed:
            timeout = min(timeout, 0.1)
        for key, _ in selector.select(timeout):
            if key.data in (b"O", b"E"):
                data = os.read(key.fd, 65536)
                if data:
                    frame(key.data, data)
                else:
                    selector.unregister(key.fd)
                    os.close(key.fd)
                    pipes -= 1
            elif key.data == b"L":
                command = os.read(0, 65536)
                if not command:  # the executor is gone
                    kill_all()
                    os._exit(137)
                killed = killed or b"K" in command
            else:
                while True:
                    try:
                        if not os.read(wake_r, 512):
                            break
                    except BlockingIOError:
                        break
    if killed and (status is None or not os.WIFEXITED(status)):
        how, code = b"killed 9", 137
    elif os.WIFSIGNALED(status):
        how, code = b"signal %d" % os.WTERMSIG(status), 128 + os.WTERMSIG(status)
    else:
        how, code = b"exit %d" % os.WEXITSTATUS(status), os.WEXITSTATUS(status)
    frame(b"X", how + b" " + accounting())
    # Hold the container until the executor removes it, detaches, or is clearly gone.
    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ)
    until = time.monotonic() + 30.0
    while time.monotonic() < until:
        if selector.select(until - time.monotonic()) and not os.read(0, 65536):
            break
    os._exit(code)

exec(globals().pop("_evalmesh_init")())
"""


def init_argv(idle_s: float) -> list[str]:
    """The container's command: the interpreter running INIT_PROGRAM as pid 1, which exits
    if no job is handed over within idle_s seconds."""
    return [
        "/usr/bin/python3",
        "-I",
        "-B",
        "-u",
        "-c",
        INIT_PROGRAM,
        f"{idle_s:.3f}",
        CODE_FILENAME,
    ]


def handover(code: bytes, stdin: bytes, backstop_s: float) -> bytes:
    """What the executor writes on a waiting pid 1's stdin to give it its job."""
    return HANDOVER.pack(len(code), len(stdin), backstop_s) + code + stdin


@dataclass(frozen=True, slots=True)
class ExitFrame:
    """pid 1's final report: how the program ended and the container's cgroup accounting.

    exit_code or signal is set when the program ended by itself; killed when pid 1 ended it
    on the executor's request. cpu_ns, peak_bytes and oom_kills are None where the cgroup
    files could not be read.
    """

    exit_code: int | None
    signal: int | None
    killed: bool
    cpu_ns: int | None
    peak_bytes: int | None
    oom_kills: int | None

    @classmethod
    def parse(cls, payload: bytes) -> ExitFrame:
        """Read `exit N|signal N|killed 9 cpu_ns=N peak=N oom_kills=N` (-1: unknown)."""
        try:
            how, value, *pairs = payload.decode("ascii").split()
            number = int(value)
            counters = {key: int(text) for key, text in (pair.split("=") for pair in pairs)}
        except ValueError as exc:
            raise SandboxError(f"bad exit frame from the sandbox init: {payload[:80]!r}") from exc
        if how not in ("exit", "signal", "killed"):
            raise SandboxError(f"bad exit frame from the sandbox init: {payload[:80]!r}")

        def known(key: str) -> int | None:
            found = counters.get(key, -1)
            return found if found >= 0 else None

        return cls(
            exit_code=number if how == "exit" else None,
            signal=number if how == "signal" else None,
            killed=how == "killed",
            cpu_ns=known("cpu_ns"),
            peak_bytes=known("peak"),
            oom_kills=known("oom_kills"),
        )


class FrameParser:
    """Splits the relayed stdout of pid 1 into (kind, payload) frames, incrementally."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        """Add bytes; return the frames they completed."""
        self._buffer += data
        frames = []
        while len(self._buffer) >= HEADER.size:
            kind, size = HEADER.unpack_from(self._buffer)
            if kind not in (b"O", b"E", b"X") or size > _MAX_FRAME:
                raise SandboxError(f"corrupt frame from the sandbox init (kind {kind!r})")
            end = HEADER.size + size
            if len(self._buffer) < end:
                break
            frames.append((kind, bytes(self._buffer[HEADER.size : end])))
            del self._buffer[:end]
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._buffer)
