"""Translation between the wire messages (``evalmesh.storage.v1``, ``evalmesh.v1``) and the domain.

Protobuf only, no grpc: the servicer calls these at its edge. Unknown enum numbers (proto3
enums are open) are refused here with a field violation naming the field.
"""

from __future__ import annotations

from enum import IntEnum
from typing import TypeVar

from google.protobuf import duration_pb2, timestamp_pb2

from evalmesh.storage.v1 import record_pb2
from evalmesh.storage.v1 import storage_service_pb2 as pb
from evalmesh.v1 import api_key_pb2, cluster_pb2, evaluation_pb2
from evalmesh_storage.creation import NewEvaluation
from evalmesh_storage.domain import (
    Activity,
    ApiKey,
    AppliedLimits,
    Chunk,
    Evaluation,
    Fault,
    Limits,
    OutputProgress,
    Priority,
    Result,
    Role,
    RunTimings,
    Spec,
    State,
    Stats,
    Stream,
    TerminationCause,
    View,
    WaitSummary,
)
from evalmesh_storage.errors import invalid

__all__ = [
    "activity",
    "api_key",
    "applied_limits",
    "chunk",
    "chunk_message",
    "enum_value",
    "evaluation",
    "new_evaluation",
    "progress",
    "record",
    "result",
    "role",
    "run_timings",
    "state_message",
    "stats",
    "timestamp",
    "us_from_duration",
    "us_from_timestamp",
    "view",
]

E = TypeVar("E", bound=IntEnum)


def enum_value(kind: type[E], value: int, field: str, default: E | None = None) -> E:
    """Return ``kind(value)``; 0 (UNSPECIFIED) means ``default``, or is refused without one."""
    if value == 0 and default is not None:
        return default
    try:
        return kind(value)
    except ValueError:
        raise invalid(field, f"unknown or unspecified value {value}") from None


def us_from_duration(duration: duration_pb2.Duration) -> int:
    """Microseconds in a Duration."""
    return int(duration.ToMicroseconds())


def us_from_timestamp(stamp: timestamp_pb2.Timestamp) -> int:
    """Microseconds since the epoch of a Timestamp."""
    return int(stamp.ToMicroseconds())


def timestamp(us: int | None) -> timestamp_pb2.Timestamp | None:
    """A Timestamp for microseconds since the epoch, or None."""
    if us is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(us)
    return stamp


def _duration(us: int | None) -> duration_pb2.Duration | None:
    if us is None:
        return None
    duration = duration_pb2.Duration()
    duration.FromMicroseconds(us)
    return duration


def view(value: int, default: View) -> View:
    """The requested view; UNSPECIFIED takes the method's default."""
    return enum_value(View, value, "view", default)


def _spec(message: evaluation_pb2.EvaluationSpec, prefix: str) -> Spec:
    limits = message.limits
    return Spec(
        code=message.code,
        stdin=message.stdin,
        language=message.language,
        runtime=message.runtime,
        priority=enum_value(Priority, message.priority, f"{prefix}priority", Priority.NORMAL),
        limits=Limits(
            wall_timeout_us=(
                us_from_duration(limits.wall_timeout) if limits.HasField("wall_timeout") else None
            ),
            memory_bytes=limits.memory_bytes if limits.HasField("memory_bytes") else None,
            max_processes=limits.max_processes if limits.HasField("max_processes") else None,
            max_output_bytes=(
                limits.max_output_bytes if limits.HasField("max_output_bytes") else None
            ),
            cpu_millicores=limits.cpu_millicores if limits.HasField("cpu_millicores") else None,
        ),
        labels=dict(message.labels),
    )


def new_evaluation(request: pb.CreateEvaluationRequest, prefix: str = "") -> NewEvaluation:
    """The domain request for one CreateEvaluationRequest."""
    if not request.HasField("spec"):
        raise invalid(f"{prefix}spec", "is required")
    return NewEvaluation(
        request.tenant, request.request_id, _spec(request.spec, f"{prefix}spec."), request.id
    )


def applied_limits(message: evaluation_pb2.AppliedLimits) -> AppliedLimits:
    """The domain value of AppliedLimits."""
    return AppliedLimits(
        wall_timeout_us=us_from_duration(message.wall_timeout),
        memory_bytes=message.memory_bytes,
        max_processes=message.max_processes,
        max_output_bytes=message.max_output_bytes,
        cpu_millicores=message.cpu_millicores,
        scratch_bytes=message.scratch_bytes,
    )


def result(message: evaluation_pb2.EvaluationResult) -> Result:
    """The domain value of an executor's EvaluationResult (output bytes are ignored)."""
    return Result(
        cause=enum_value(
            TerminationCause, message.cause, "result.cause", TerminationCause.UNSPECIFIED
        ),
        fault=enum_value(Fault, message.fault, "result.fault", Fault.UNSPECIFIED),
        exit_code=message.exit_code if message.HasField("exit_code") else None,
        signal=message.signal if message.HasField("signal") else None,
        detail=message.detail,
        wall_time_us=us_from_duration(message.wall_time) if message.HasField("wall_time") else None,
        cpu_time_us=us_from_duration(message.cpu_time) if message.HasField("cpu_time") else None,
        peak_memory_bytes=message.peak_memory_bytes,
        stdout_truncated=message.stdout_truncated,
        stderr_truncated=message.stderr_truncated,
    )


def chunk(message: evaluation_pb2.OutputChunk, field: str) -> Chunk:
    """The domain value of an OutputChunk."""
    stream = enum_value(Stream, message.stream, f"{field}.stream")
    return Chunk(stream, message.sequence, message.offset, message.data)


def chunk_message(value: Chunk) -> evaluation_pb2.OutputChunk:
    """The wire form of a stored chunk."""
    return evaluation_pb2.OutputChunk(
        stream=evaluation_pb2.OutputStream.ValueType(int(value.stream)),
        sequence=value.sequence,
        offset=value.offset,
        data=value.data,
    )


def progress(value: OutputProgress) -> record_pb2.OutputProgress:
    """The wire form of stored-output progress."""
    return record_pb2.OutputProgress(
        stdout_bytes=value.stdout_bytes,
        stderr_bytes=value.stderr_bytes,
        stdout_truncated=value.stdout_truncated,
        stderr_truncated=value.stderr_truncated,
    )


def _spec_message(value: Spec) -> evaluation_pb2.EvaluationSpec:
    limits = evaluation_pb2.Limits(
        wall_timeout=_duration(value.limits.wall_timeout_us),
        memory_bytes=value.limits.memory_bytes,
        max_processes=value.limits.max_processes,
        max_output_bytes=value.limits.max_output_bytes,
        cpu_millicores=value.limits.cpu_millicores,
    )
    return evaluation_pb2.EvaluationSpec(
        code=value.code,
        stdin=value.stdin,
        language=value.language,
        runtime=value.runtime,
        priority=evaluation_pb2.Priority.ValueType(int(value.priority)),
        limits=limits,
        labels=dict(value.labels),
    )


def _result_message(value: Evaluation) -> evaluation_pb2.EvaluationResult | None:
    found = value.result
    if found is None:
        return None
    return evaluation_pb2.EvaluationResult(
        cause=evaluation_pb2.TerminationCause.ValueType(int(found.cause)),
        fault=evaluation_pb2.Fault.ValueType(int(found.fault)),
        exit_code=found.exit_code,
        signal=found.signal,
        detail=found.detail,
        stdout=value.stdout or b"",
        stderr=value.stderr or b"",
        stdout_truncated=value.progress.stdout_truncated,
        stderr_truncated=value.progress.stderr_truncated,
        stdout_bytes=value.progress.stdout_bytes,
        stderr_bytes=value.progress.stderr_bytes,
        wall_time=_duration(found.wall_time_us),
        cpu_time=_duration(found.cpu_time_us),
        peak_memory_bytes=found.peak_memory_bytes,
    )


def _applied_message(value: AppliedLimits | None) -> evaluation_pb2.AppliedLimits | None:
    if value is None:
        return None
    return evaluation_pb2.AppliedLimits(
        wall_timeout=_duration(value.wall_timeout_us),
        memory_bytes=value.memory_bytes,
        max_processes=value.max_processes,
        max_output_bytes=value.max_output_bytes,
        cpu_millicores=value.cpu_millicores,
        scratch_bytes=value.scratch_bytes,
    )


def state_message(value: State) -> evaluation_pb2.Evaluation.State.ValueType:
    """The wire enum of a state."""
    return evaluation_pb2.Evaluation.State.ValueType(int(value))


def evaluation(value: Evaluation) -> evaluation_pb2.Evaluation:
    """The public view of an evaluation (the domain value already reflects the view)."""
    return evaluation_pb2.Evaluation(
        id=value.id,
        request_id=value.request_id,
        spec=_spec_message(value.spec),
        state=state_message(value.state),
        result=_result_message(value),
        attempt=value.attempt,
        executor_id=value.executor_id,
        runtime=value.runtime,
        runtime_digest=value.runtime_digest,
        applied_limits=_applied_message(value.applied_limits),
        create_time=timestamp(value.create_time),
        start_time=timestamp(value.start_time),
        end_time=timestamp(value.end_time),
        queue_position=value.queue_position,
        estimated_start_time=timestamp(value.estimated_start_time),
        cancel_requested=value.cancel_requested,
        run_start_time=timestamp(value.run_start_time),
        run_end_time=timestamp(value.run_end_time),
        output_stored_time=timestamp(value.output_stored_time),
    )


def record(value: Evaluation) -> record_pb2.EvaluationRecord:
    """The system-of-record view: the evaluation plus tenant and control-plane bookkeeping."""
    return record_pb2.EvaluationRecord(
        tenant=value.tenant,
        evaluation=evaluation(value),
        lease_expire_time=timestamp(value.lease_expire_time),
        publish_time=timestamp(value.publish_time),
        publish_count=value.publish_count,
        cancel_reason=value.cancel_reason,
        progress=progress(value.progress),
    )


def api_key(value: ApiKey) -> api_key_pb2.ApiKey:
    """The wire form of an API key (never the secret)."""
    return api_key_pb2.ApiKey(
        id=value.id,
        tenant=value.tenant,
        role=api_key_pb2.Role.ValueType(int(value.role)),
        display_name=value.display_name,
        prefix=value.prefix,
        create_time=timestamp(value.create_time),
        revoke_time=timestamp(value.revoke_time),
    )


def role(value: int) -> Role:
    """The requested role; UNSPECIFIED means USER."""
    return enum_value(Role, value, "role", Role.USER)


def stats(value: Stats) -> pb.GetStatsResponse:
    """The wire form of the counts, every state and priority listed."""
    return pb.GetStatsResponse(
        state_counts=[
            cluster_pb2.StateCount(
                state=evaluation_pb2.Evaluation.State.ValueType(int(state)),
                count=value.state_counts.get(state, 0),
            )
            for state in State
        ],
        queued=[
            cluster_pb2.PriorityQueueStats(
                priority=evaluation_pb2.Priority.ValueType(int(depth.priority)),
                depth=depth.depth,
                oldest_wait=_duration(depth.oldest_wait_us),
            )
            for depth in value.queued
        ],
        completed_last_minute=value.completed_last_minute,
    )


def run_timings(request: pb.CompleteEvaluationRequest) -> RunTimings | None:
    """The executor's measured moments of a completion, or None when it sent none."""
    if not request.HasField("timings"):
        return None
    timings = request.timings

    def offset(field: str) -> int | None:
        if not timings.HasField(field):  # type: ignore[arg-type]
            return None
        us = us_from_duration(getattr(timings, field))
        if us < 0:
            raise invalid(f"timings.{field}", "must not be negative")
        return us

    return RunTimings(offset("sandbox_ready"), offset("program_ended"), offset("output_stored"))


def _wait(value: WaitSummary | None) -> cluster_pb2.WaitSummary | None:
    if value is None:
        return None
    return cluster_pb2.WaitSummary(
        count=value.count,
        p50=_duration(value.p50_us),
        p90=_duration(value.p90_us),
        p99=_duration(value.p99_us),
        max=_duration(value.max_us),
    )


def activity(value: Activity) -> cluster_pb2.QueueActivity:
    """The wire form of the activity over a window."""
    return cluster_pb2.QueueActivity(
        start_time=timestamp(value.start_time),
        end_time=timestamp(value.end_time),
        bucket_width=_duration(value.bucket_us),
        buckets=[
            cluster_pb2.ActivityBucket(
                start_time=timestamp(bucket.start_time),
                completed=bucket.completed,
                started=bucket.started,
                wait=_wait(bucket.wait),
            )
            for bucket in value.buckets
        ],
        completed=value.completed,
        started=value.started,
        wait=_wait(value.wait),
    )
