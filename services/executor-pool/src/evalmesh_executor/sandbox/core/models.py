"""Value types of the sandbox API: limits, requests, output chunks and results."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "MAX_CHUNK_BYTES",
    "OutputCallback",
    "OutputChunk",
    "OutputStream",
    "Package",
    "RuntimeDetails",
    "SandboxError",
    "SandboxLimits",
    "SandboxOutcome",
    "SandboxRequest",
    "SandboxResult",
    "SandboxUnavailableError",
    "setup_failed",
    "unavailable_runtime",
]

MiB = 1024 * 1024

#: Upper bound of `OutputChunk.data`, in bytes.
MAX_CHUNK_BYTES = 64 * 1024

OutputStream = Literal["stdout", "stderr"]


class SandboxError(Exception):
    """The platform could not run a sandbox (never raised for anything user code does)."""


class SandboxUnavailableError(SandboxError):
    """This host cannot provide the sandbox (bwrap, cgroups or the runtime is missing)."""


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """Resource limits of one evaluation; every value must be positive.

    wall_timeout: seconds of wall-clock time for the whole sandbox.
    memory_bytes: memory (RAM + tmpfs pages, swap disabled) of the job's process tree.
    max_processes: tasks (processes and threads) the job may hold at once.
    max_output_bytes: bytes kept per stream; one more byte ends the job as OUTPUT_LIMIT.
    cpu_quota: CPU cores' worth of time per period (1.0 = one core).
    scratch_bytes: size of each scratch tmpfs (/tmp, which is also $HOME, and /dev/shm).
    scratch_inodes: files and directories each scratch tmpfs may hold.
    max_open_files: RLIMIT_NOFILE of every job process.
    max_file_size_bytes: RLIMIT_FSIZE: largest offset any job process may write to.
    """

    wall_timeout: float = 30.0
    memory_bytes: int = 256 * MiB
    max_processes: int = 64
    max_output_bytes: int = 1 * MiB
    cpu_quota: float = 1.0
    scratch_bytes: int = 64 * MiB
    scratch_inodes: int = 16 * 1024
    max_open_files: int = 256
    max_file_size_bytes: int = 64 * MiB

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            kind = (int, float) if name in ("wall_timeout", "cpu_quota") else (int,)
            if isinstance(value, bool) or not isinstance(value, kind) or value <= 0:
                raise ValueError(f"SandboxLimits.{name} must be a positive number, got {value!r}")


@dataclass(frozen=True, slots=True)
class SandboxRequest:
    """One program to run: source code, the bytes on its stdin, a runtime name and limits.

    evaluation_id only names the run to the host (docker labels, used to find orphans);
    the sandbox never interprets it.
    """

    code: bytes
    stdin: bytes = b""
    runtime: str = "python"
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    evaluation_id: str = ""


@dataclass(frozen=True, slots=True)
class OutputChunk:
    """A piece of one output stream.

    seq counts chunks of that stream from 0; offset is the stream byte offset of data[0];
    data holds at most MAX_CHUNK_BYTES bytes. Chunks of one stream arrive in order.
    """

    stream: OutputStream
    seq: int
    offset: int
    data: bytes


OutputCallback = Callable[[OutputChunk], Awaitable[None]]


class SandboxOutcome(enum.Enum):
    """How a sandbox run ended."""

    EXITED = "exited"  # the program ended by itself: see exit_code / signal
    TIMED_OUT = "timed_out"  # killed at the wall timeout
    MEMORY_LIMIT = "memory_limit"  # the kernel OOM-killed a job process (memory cgroup)
    OUTPUT_LIMIT = "output_limit"  # a stream passed max_output_bytes; killed
    CANCELLED = "cancelled"  # killed on request
    PLATFORM_ERROR = "platform_error"  # the sandbox itself failed; never caused by user code

    @property
    def platform_fault(self) -> bool:
        """True when the platform, not the user's program, is to blame."""
        return self is SandboxOutcome.PLATFORM_ERROR


@dataclass(frozen=True, slots=True)
class SandboxResult:
    """The terminal record of one sandbox run.

    exit_code is set when the program exited by itself; signal when the program (or the
    sandbox teardown, for TIMED_OUT, MEMORY_LIMIT, OUTPUT_LIMIT, CANCELLED) was killed by
    that signal. stdout/stderr hold at most applied_limits.max_output_bytes each.
    runtime_identity names the exact interpreter (version and sha256 of its binary).
    ended_at is ``time.monotonic()`` when the program ended (0.0 if it never started), so the
    caller can place the run (``ended_at - wall_time_s`` to ``ended_at``) on its own clock.
    """

    outcome: SandboxOutcome
    exit_code: int | None
    signal: int | None
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    wall_time_s: float
    cpu_time_s: float
    peak_memory_bytes: int
    runtime: str
    runtime_identity: str
    applied_limits: SandboxLimits
    detail: str = ""
    ended_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Package:
    """One installed distribution: its normalised name and exact version."""

    name: str
    version: str


@dataclass(frozen=True, slots=True)
class RuntimeDetails:
    """What a backend knows of one of its runtimes beyond its identity."""

    description: str = ""
    packages: tuple[Package, ...] = ()


def unavailable_runtime(request: SandboxRequest) -> SandboxResult:
    """The result for a request naming a runtime this backend does not have: a platform fault."""
    return setup_failed(
        request, f"runtime {request.runtime!r} is not available on this executor", identity=""
    )


def setup_failed(request: SandboxRequest, detail: str, identity: str = "") -> SandboxResult:
    """The result of a run whose sandbox could not even be set up: a platform fault."""
    return SandboxResult(
        outcome=SandboxOutcome.PLATFORM_ERROR,
        exit_code=None,
        signal=None,
        stdout=b"",
        stderr=b"",
        stdout_truncated=False,
        stderr_truncated=False,
        wall_time_s=0.0,
        cpu_time_s=0.0,
        peak_memory_bytes=0,
        runtime=request.runtime,
        runtime_identity=identity,
        applied_limits=request.limits,
        detail=detail,
    )
