"""The host side of the docker pid 1's protocol (``init``): its command, the hand-over, frames.

The container's command is the image's interpreter running the source of ``init`` (shipped
as a file of this package, read once) as pid 1. The executor writes the hand-over on the
container's stdin (a header of the code and stdin lengths and the backstop, then the code and
the job's stdin), later perhaps `K` (kill the job), and reads pid 1's frames from the
container's stdout: output (`O`, `E`) and, last, the exit report (`X`). The wire format is
defined once, in ``init``, which speaks it inside the container.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from evalmesh_executor.sandbox.core.inside import CODE_FILENAME
from evalmesh_executor.sandbox.core.models import SandboxError

from .init import FRAME, HANDOVER

__all__ = [
    "HANDOVER",
    "HEADER",
    "INIT_SOURCE",
    "ExitFrame",
    "FrameParser",
    "handover",
    "init_argv",
]

#: Frame header: kind (b"O" stdout, b"E" stderr, b"X" exit status) and payload length.
HEADER = FRAME

#: The program pid 1 runs (``python3 -c``): the source of ``init``, read once at import.
INIT_SOURCE = (
    resources.files("evalmesh_executor.sandbox.docker")
    .joinpath("init.py")
    .read_text(encoding="utf-8")
)

_MAX_FRAME = 1 << 20


def init_argv(idle_s: float) -> list[str]:
    """The container's command: the interpreter running ``init`` as pid 1, which exits if no
    job is handed over within idle_s seconds."""
    return [
        "/usr/bin/python3",
        "-I",
        "-B",
        "-u",
        "-c",
        INIT_SOURCE,
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
