"""Friendly, typed views of the API's messages; each keeps its message as ``.proto``."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from google.protobuf import duration_pb2, timestamp_pb2

from evalmesh.client._text import decode_output
from evalmesh.v1 import evaluation_pb2

__all__ = ["Cause", "Evaluation", "Fault", "Priority", "State", "Stream"]

_PB = evaluation_pb2
E = TypeVar("E", bound=StrEnum)


class State(StrEnum):
    """Where an evaluation is in its life; the last seven are terminal and never change."""

    UNSPECIFIED = "UNSPECIFIED"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    MEMORY_LIMIT_EXCEEDED = "MEMORY_LIMIT_EXCEEDED"
    OUTPUT_LIMIT_EXCEEDED = "OUTPUT_LIMIT_EXCEEDED"
    CANCELLED = "CANCELLED"
    ERROR = "ERROR"

    @property
    def terminal(self) -> bool:
        """True once the evaluation has ended."""
        return self not in (State.UNSPECIFIED, State.QUEUED, State.RUNNING)

    @classmethod
    def parse(cls, value: State | str) -> State:
        """Accept a State or its name in any case, with or without the ``STATE_`` prefix."""
        return _parse_enum(cls, value, "STATE_")

    @classmethod
    def from_proto(cls, value: int) -> State:
        """The State of an ``Evaluation.State`` number (UNSPECIFIED for an unknown one)."""
        return _from_proto(cls, _PB.Evaluation.State, value, "STATE_")

    def to_proto(self) -> _PB.Evaluation.State.ValueType:
        """The ``Evaluation.State`` number."""
        return _PB.Evaluation.State.Value(f"STATE_{self.value}")


class Priority(StrEnum):
    """The scheduling class: HIGH for interactive work, NORMAL by default, LOW for bulk work."""

    UNSPECIFIED = "UNSPECIFIED"
    HIGH = "HIGH"
    NORMAL = "NORMAL"
    LOW = "LOW"

    @classmethod
    def parse(cls, value: Priority | str) -> Priority:
        """Accept a Priority or its name in any case (``"high"``)."""
        return _parse_enum(cls, value, "PRIORITY_")

    @classmethod
    def from_proto(cls, value: int) -> Priority:
        """The Priority of a ``Priority`` number."""
        return _from_proto(cls, _PB.Priority, value, "PRIORITY_")

    def to_proto(self) -> _PB.Priority.ValueType:
        """The ``Priority`` number."""
        return _PB.Priority.Value(f"PRIORITY_{self.value}")


class Stream(StrEnum):
    """One of a program's two output streams."""

    STDOUT = "stdout"
    STDERR = "stderr"

    @classmethod
    def from_proto(cls, value: int) -> Stream:
        """The Stream of an ``OutputStream`` number."""
        return Stream.STDERR if value == _PB.OUTPUT_STREAM_STDERR else Stream.STDOUT


class Fault(StrEnum):
    """Which side caused the outcome: NONE (exit 0), USER, or PLATFORM."""

    UNSPECIFIED = "UNSPECIFIED"
    NONE = "NONE"
    USER = "USER"
    PLATFORM = "PLATFORM"


class Cause(StrEnum):
    """The precise reason an evaluation ended."""

    UNSPECIFIED = "UNSPECIFIED"
    EXITED = "EXITED"
    SIGNALED = "SIGNALED"
    WALL_TIMEOUT = "WALL_TIMEOUT"
    MEMORY_LIMIT = "MEMORY_LIMIT"
    OUTPUT_LIMIT = "OUTPUT_LIMIT"
    CANCELLED = "CANCELLED"
    PLATFORM_ERROR = "PLATFORM_ERROR"
    MAX_ATTEMPTS = "MAX_ATTEMPTS"


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """One submitted program and what is known about its run.

    ``stdout``/``stderr`` (and ``code``) are filled only by reads in the full view
    (:meth:`Client.get`, :meth:`Client.run`); listings and snapshots carry their sizes only.
    Where the time went, all on the database's clock: ``create_time`` (accepted),
    ``start_time`` (claimed), ``run_start_time`` (sandbox ready, program started),
    ``run_end_time`` (program ended), ``output_stored_time`` and ``end_time`` (result recorded).
    """

    id: str
    request_id: str
    state: State
    priority: Priority
    runtime: str
    labels: dict[str, str]
    code: str
    stdout: bytes
    stderr: bytes
    stdout_bytes: int
    stderr_bytes: int
    stdout_truncated: bool
    stderr_truncated: bool
    exit_code: int | None
    signal: int | None
    cause: Cause
    fault: Fault
    detail: str
    attempt: int
    executor_id: str
    runtime_digest: str
    create_time: datetime | None
    start_time: datetime | None
    end_time: datetime | None
    wall_time: timedelta | None
    cpu_time: timedelta | None
    peak_memory_bytes: int
    queue_position: int | None
    cancel_requested: bool
    run_start_time: datetime | None
    run_end_time: datetime | None
    output_stored_time: datetime | None
    proto: evaluation_pb2.Evaluation = dataclasses.field(repr=False, compare=False)

    @property
    def terminal(self) -> bool:
        """True once the evaluation has ended; its state never changes again."""
        return self.state.terminal

    @property
    def full(self) -> bool:
        """True when read in the full view: ``code``, ``stdout`` and ``stderr`` are filled in."""
        return bool(self.code)

    @property
    def succeeded(self) -> bool:
        """True when the program exited with status 0."""
        return self.state is State.SUCCEEDED

    @classmethod
    def from_proto(cls, message: evaluation_pb2.Evaluation) -> Evaluation:
        """Wrap an ``evalmesh.v1.Evaluation``."""
        result = message.result
        spec = message.spec
        return cls(
            id=message.id,
            request_id=message.request_id,
            state=State.from_proto(message.state),
            priority=Priority.from_proto(spec.priority),
            runtime=message.runtime or spec.runtime,
            labels=dict(spec.labels),
            code=spec.code,
            stdout=result.stdout,
            stderr=result.stderr,
            stdout_bytes=result.stdout_bytes,
            stderr_bytes=result.stderr_bytes,
            stdout_truncated=result.stdout_truncated,
            stderr_truncated=result.stderr_truncated,
            exit_code=result.exit_code if result.HasField("exit_code") else None,
            signal=result.signal if result.HasField("signal") else None,
            cause=_from_proto(Cause, _PB.TerminationCause, result.cause, "TERMINATION_CAUSE_"),
            fault=_from_proto(Fault, _PB.Fault, result.fault, "FAULT_"),
            detail=result.detail,
            attempt=message.attempt,
            executor_id=message.executor_id,
            runtime_digest=message.runtime_digest,
            create_time=timestamp(message, "create_time"),
            start_time=timestamp(message, "start_time"),
            end_time=timestamp(message, "end_time"),
            wall_time=duration(result, "wall_time"),
            cpu_time=duration(result, "cpu_time"),
            peak_memory_bytes=result.peak_memory_bytes,
            queue_position=message.queue_position if message.HasField("queue_position") else None,
            cancel_requested=message.cancel_requested,
            run_start_time=timestamp(message, "run_start_time"),
            run_end_time=timestamp(message, "run_end_time"),
            output_stored_time=timestamp(message, "output_stored_time"),
            proto=message,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: times in ISO 8601, durations in seconds, output decoded as UTF-8
        with replacement characters for invalid bytes, never for a character the output cap cut
        (the exact bytes stay in ``stdout`` and ``stderr``).
        ``code``, ``stdout`` and ``stderr`` appear only for a read in the full view."""
        skip = {"proto"} if self.full else {"proto", "code", "stdout", "stderr"}
        data = {
            field.name: _jsonable(getattr(self, field.name))
            for field in dataclasses.fields(self)
            if field.name not in skip
        }
        if self.full:
            # A character the output cap cut in two is left out, not shown as invalid bytes.
            data["stdout"] = decode_output(self.stdout, self.stdout_truncated)
            data["stderr"] = decode_output(self.stderr, self.stderr_truncated)
        return data


def timestamp(message: Any, field: str) -> datetime | None:
    """An aware UTC datetime for a set Timestamp field, else None."""
    if not message.HasField(field):
        return None
    value: timestamp_pb2.Timestamp = getattr(message, field)
    return value.ToDatetime(tzinfo=UTC)


def duration(message: Any, field: str) -> timedelta | None:
    """A timedelta for a set Duration field, else None."""
    if not message.HasField(field):
        return None
    value: duration_pb2.Duration = getattr(message, field)
    return value.ToTimedelta()


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    return value


def _parse_enum(cls: type[E], value: E | str, prefix: str) -> E:
    if isinstance(value, cls):
        return value
    name = str(value).strip().upper().replace("-", "_").removeprefix(prefix)
    try:
        return cls(name)
    except ValueError:
        choices = ", ".join(member.value.lower() for member in cls if member != "UNSPECIFIED")
        raise ValueError(
            f"unknown {cls.__name__.lower()} {value!r}: use one of {choices}"
        ) from None


def _from_proto(cls: type[E], wrapper: Any, value: int, prefix: str) -> E:
    try:
        return cls(str(wrapper.Name(value)).removeprefix(prefix))
    except ValueError:
        return cls("UNSPECIFIED")
