"""The docker backend's pid 1 inside each container, and the host side of its protocol.

Docker's own init (tini) exits as soon as the program does; the engine then removes the
container's cgroup, and with it the CPU time and peak memory of the job. So the container
runs this small Python init instead, as pid 1 (which no job process can signal or ptrace):

1. It reads the code (then the job's stdin) from the container's stdin, exactly as many
   bytes as argv says, and puts the stdin bytes in a read-only memfd: empty stdin is EOF at
   once, and nothing ever blocks on writing it.
2. It forks the program (pid 2, a session of its own), whose stdout and stderr are pipes.
   pid 1 is the only writer of the container's stdout: it relays the pipes there in frames
   (`O`/`E` + 4-byte length + bytes), so job output can never be mistaken for a control frame.
3. When the program exits, every other process of the job is killed (as bwrap's pid 1 does)
   and reaped; pid 1 then sends the exit status (`X` frame) and waits. The executor reads the
   cgroup accounting through the stats API while the container still runs, then kills it.
4. The rest of the container's stdin is a lifeline: EOF there means the executor that
   attached is gone, so the job is killed at once. A wall-clock backstop does the same.

A job process can end this init only by making the job end (SIGKILL from inside the pid
namespace does not reach pid 1; it is not dumpable, and seccomp denies ptrace).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .layout import CODE_PATH
from .models import SandboxError

__all__ = [
    "CODE_FILENAME",
    "HEADER",
    "INIT_PROGRAM",
    "ExitFrame",
    "FrameParser",
    "init_argv",
]

#: The name the program's code runs under (tracebacks, sys.argv[0]), as with bwrap.
CODE_FILENAME = CODE_PATH

#: Frame header: kind (b"O" stdout, b"E" stderr, b"X" exit status) and payload length.
HEADER = struct.Struct(">cI")

_MAX_FRAME = 1 << 20

INIT_PROGRAM = r"""
import os, sys

def _evalmesh_init():
    import selectors, signal, struct, time
    code_len, stdin_len, backstop = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
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

    def dumpable(flag):
        try:
            import ctypes
            ctypes.CDLL(None).prctl(4, flag, 0, 0, 0)  # PR_SET_DUMPABLE
        except Exception:
            pass

    code = read_exact(code_len)
    memfd = os.memfd_create("stdin")
    write_all(memfd, read_exact(stdin_len))
    stdin = os.open("/proc/self/fd/%d" % memfd, os.O_RDONLY)
    os.close(memfd)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    dumpable(0)  # the job can neither ptrace pid 1 nor open /proc/1/fd or /proc/1/mem
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
        import linecache
        name = sys.argv[4]
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

    def accounting():
        # The container's own cgroup, mounted read-only: final now that only pid 1 is left.
        v2 = read_file("/sys/fs/cgroup/cpu.stat")
        if v2 is not None:
            usec = field(v2, "usage_usec")
            cpu = usec * 1000 if usec >= 0 else -1
            peak = number(read_file("/sys/fs/cgroup/memory.peak"))
            oom = field(read_file("/sys/fs/cgroup/memory.events"), "oom_kill")
        else:
            cpu = number(read_file("/sys/fs/cgroup/cpuacct/cpuacct.usage"))
            peak = number(read_file("/sys/fs/cgroup/memory/memory.max_usage_in_bytes"))
            oom = field(read_file("/sys/fs/cgroup/memory/memory.oom_control"), "oom_kill")
        return b"cpu_ns=%d peak=%d oom_kills=%d" % (cpu, peak, oom)

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


def init_argv(code_len: int, stdin_len: int, backstop_s: float) -> list[str]:
    """The container's command: the interpreter running INIT_PROGRAM as pid 1."""
    return [
        "/usr/bin/python3",
        "-I",
        "-B",
        "-u",
        "-c",
        INIT_PROGRAM,
        str(code_len),
        str(stdin_len),
        f"{backstop_s:.3f}",
        CODE_FILENAME,
    ]


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
