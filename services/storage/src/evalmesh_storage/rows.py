"""Reading evaluations: which columns a view needs, and rows turned into domain values."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, RowMapping, Select, select

from evalmesh_storage.db import Tx
from evalmesh_storage.domain import (
    AppliedLimits,
    Evaluation,
    Fault,
    Limits,
    OutputProgress,
    Priority,
    Result,
    Spec,
    State,
    Stream,
    TerminationCause,
    View,
)
from evalmesh_storage.models import evaluation_labels, evaluations, output_chunks

__all__ = [
    "evaluation_from_row",
    "fetch_evaluations",
    "progress_from_row",
    "read_prefix",
    "select_evaluations",
]

_HEAVY = frozenset({"code", "stdin"})
_BASIC_COLUMNS = [column for column in evaluations.c if column.name not in _HEAVY]


def select_evaluations(view: View) -> Select[Any]:
    """Return ``SELECT`` of the columns ``view`` needs (BASIC never reads code or stdin)."""
    return select(*(evaluations.c if view is View.FULL else _BASIC_COLUMNS))


async def fetch_evaluations(
    tx: Tx,
    *where: ColumnElement[bool],
    view: View,
    order_by: Sequence[ColumnElement[Any]] = (),
    limit: int | None = None,
) -> list[Evaluation]:
    """Read the evaluations matching ``where`` with their labels (and output, if FULL)."""
    query = select_evaluations(view).where(*where).order_by(*order_by)
    if limit is not None:
        query = query.limit(limit)
    rows = (await tx.conn.execute(query)).mappings().all()
    labels = await _labels(tx, [row["id"] for row in rows])
    found = []
    for row in rows:
        output: dict[Stream, bytes] = {}
        if view is View.FULL:
            for stream in Stream:
                output[stream] = await read_prefix(tx, row["id"], stream, _next_seq(row, stream))
        found.append(evaluation_from_row(row, labels.get(row["id"], {}), output))
    return found


async def read_prefix(tx: Tx, evaluation_id: str, stream: Stream, next_seq: int) -> bytes:
    """Return the stored gapless prefix of one stream (chunks ``0 .. next_seq - 1``)."""
    if next_seq <= 0:
        return b""
    query = (
        select(output_chunks.c.data)
        .where(
            output_chunks.c.evaluation_id == evaluation_id,
            output_chunks.c.stream == int(stream),
            output_chunks.c.seq < next_seq,
        )
        .order_by(output_chunks.c.seq)
    )
    return b"".join(bytes(data) for data in (await tx.conn.scalars(query)).all())


async def _labels(tx: Tx, ids: Iterable[str]) -> dict[str, dict[str, str]]:
    wanted = list(ids)
    found: dict[str, dict[str, str]] = {}
    # Bounded IN lists keep every backend well under its parameter limit.
    for start in range(0, len(wanted), 500):
        query = select(evaluation_labels).where(
            evaluation_labels.c.evaluation_id.in_(wanted[start : start + 500])
        )
        for row in (await tx.conn.execute(query)).mappings():
            found.setdefault(row["evaluation_id"], {})[row["key"]] = row["value"]
    return found


def _next_seq(row: RowMapping, stream: Stream) -> int:
    return int(row["stdout_next_seq" if stream is Stream.STDOUT else "stderr_next_seq"])


def evaluation_from_row(
    row: RowMapping, labels: dict[str, str], output: dict[Stream, bytes] | None = None
) -> Evaluation:
    """Build the domain value from a row; ``output`` holds each stream's bytes in FULL."""
    state = State(row["state"])
    output = output or {}
    return Evaluation(
        id=row["id"],
        tenant=row["tenant"],
        request_id=row["request_id"],
        spec=_spec(row, labels),
        state=state,
        attempt=row["attempt"],
        executor_id=row["executor_id"],
        runtime_digest=row["runtime_digest"],
        applied_limits=_applied(row),
        result=_result(row) if state.terminal else None,
        progress=progress_from_row(row),
        create_time=row["create_time"],
        start_time=row["start_time"],
        end_time=row["end_time"],
        lease_expire_time=row["lease_expires_at"],
        publish_time=row["publish_time"],
        publish_count=row["publish_count"],
        cancel_requested=bool(row["cancel_requested"]),
        cancel_reason=row["cancel_reason"],
        stdout=output.get(Stream.STDOUT),
        stderr=output.get(Stream.STDERR),
    )


def progress_from_row(row: RowMapping) -> OutputProgress:
    """The stored-output progress columns of an evaluation row."""
    return OutputProgress(
        stdout_bytes=row["stdout_bytes"],
        stderr_bytes=row["stderr_bytes"],
        stdout_truncated=bool(row["stdout_truncated"]),
        stderr_truncated=bool(row["stderr_truncated"]),
    )


def _spec(row: RowMapping, labels: dict[str, str]) -> Spec:
    return Spec(
        code=bytes(row.get("code") or b"").decode("utf-8"),
        stdin=bytes(row.get("stdin") or b""),
        language=row["language"],
        runtime=row["runtime"],
        priority=Priority(row["priority"]),
        limits=Limits(
            wall_timeout_us=row["limit_wall_timeout_us"],
            memory_bytes=row["limit_memory_bytes"],
            max_processes=row["limit_max_processes"],
            max_output_bytes=row["limit_max_output_bytes"],
            cpu_millicores=row["limit_cpu_millicores"],
        ),
        labels=labels,
    )


def _applied(row: RowMapping) -> AppliedLimits | None:
    if row["applied_max_output_bytes"] is None:
        return None
    return AppliedLimits(
        wall_timeout_us=row["applied_wall_timeout_us"] or 0,
        memory_bytes=row["applied_memory_bytes"] or 0,
        max_processes=row["applied_max_processes"] or 0,
        max_output_bytes=row["applied_max_output_bytes"] or 0,
        cpu_millicores=row["applied_cpu_millicores"] or 0,
        scratch_bytes=row["applied_scratch_bytes"] or 0,
    )


def _result(row: RowMapping) -> Result:
    return Result(
        cause=TerminationCause(row["result_cause"]),
        fault=Fault(row["result_fault"]),
        exit_code=row["result_exit_code"],
        signal=row["result_signal"],
        detail=row["result_detail"],
        wall_time_us=row["result_wall_time_us"],
        cpu_time_us=row["result_cpu_time_us"],
        peak_memory_bytes=row["result_peak_memory_bytes"],
        stdout_truncated=bool(row["stdout_truncated"]),
        stderr_truncated=bool(row["stderr_truncated"]),
    )
