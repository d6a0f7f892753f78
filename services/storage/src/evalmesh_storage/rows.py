"""Reading evaluations: which columns a view needs, and rows turned into domain values.

The statements of the hot path (one evaluation by id, its labels, its output prefix) are built
once, with bound parameters, so running one costs a cache lookup instead of building and
compiling a statement each time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, bindparam, select

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
    "BASIC_COLUMNS",
    "Row",
    "evaluation_from_row",
    "evaluation_of",
    "fetch_evaluations",
    "fetch_one",
    "progress_from_row",
    "read_prefix",
    "select_evaluations",
]

Row = Mapping[Any, Any]  # a RowMapping, or a dict made from one
_E = evaluations.c
_L = evaluation_labels.c
_C = output_chunks.c
_HEAVY = frozenset({"code", "stdin"})
BASIC_COLUMNS = [column for column in evaluations.c if column.name not in _HEAVY]


def select_evaluations(view: View) -> Select[Any]:
    """Return ``SELECT`` of the columns ``view`` needs (BASIC never reads code or stdin)."""
    return select(*(evaluations.c if view is View.FULL else BASIC_COLUMNS))


_ONE = {view: select_evaluations(view).where(_E.id == bindparam("id")) for view in View}
_ONE_OF_TENANT = {view: _ONE[view].where(_E.tenant == bindparam("tenant")) for view in View}
_LABELS_OF_ONE = select(_L.key, _L.value).where(_L.evaluation_id == bindparam("id"))
_PREFIX = (
    select(_C.data)
    .where(
        _C.evaluation_id == bindparam("id"),
        _C.stream == bindparam("stream"),
        _C.seq < bindparam("next_seq"),
    )
    .order_by(_C.seq)
)


def fetch_one(tx: Tx, evaluation_id: str, view: View, tenant: str = "") -> Evaluation | None:
    """Read one evaluation by id (of ``tenant`` only, unless it is empty), or None."""
    if tenant:
        params = {"id": evaluation_id, "tenant": tenant}
        row = tx.conn.execute(_ONE_OF_TENANT[view], params).mappings().first()
    else:
        row = tx.conn.execute(_ONE[view], {"id": evaluation_id}).mappings().first()
    return None if row is None else evaluation_of(tx, row, view)


def evaluation_of(tx: Tx, row: Row, view: View) -> Evaluation:
    """The evaluation of a row already read (or just written): labels, and output if FULL."""
    labels = {key: value for key, value in tx.conn.execute(_LABELS_OF_ONE, {"id": row["id"]})}
    output: dict[Stream, bytes] = {}
    if view is View.FULL:
        for stream in Stream:
            output[stream] = read_prefix(tx, row["id"], stream, _next_seq(row, stream))
    else:
        row = {key: value for key, value in row.items() if key not in _HEAVY}
    return evaluation_from_row(row, labels, output)


def fetch_evaluations(
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
    rows = (tx.conn.execute(query)).mappings().all()
    labels = _labels(tx, [row["id"] for row in rows])
    found = []
    for row in rows:
        output: dict[Stream, bytes] = {}
        if view is View.FULL:
            for stream in Stream:
                output[stream] = read_prefix(tx, row["id"], stream, _next_seq(row, stream))
        found.append(evaluation_from_row(row, labels.get(row["id"], {}), output))
    return found


def read_prefix(tx: Tx, evaluation_id: str, stream: Stream, next_seq: int) -> bytes:
    """Return the stored gapless prefix of one stream (chunks ``0 .. next_seq - 1``)."""
    if next_seq <= 0:
        return b""
    params = {"id": evaluation_id, "stream": int(stream), "next_seq": next_seq}
    return b"".join(bytes(data) for data in tx.conn.scalars(_PREFIX, params))


def _labels(tx: Tx, ids: Iterable[str]) -> dict[str, dict[str, str]]:
    wanted = list(ids)
    found: dict[str, dict[str, str]] = {}
    # Bounded IN lists keep every backend well under its parameter limit.
    for start in range(0, len(wanted), 500):
        query = select(evaluation_labels).where(
            evaluation_labels.c.evaluation_id.in_(wanted[start : start + 500])
        )
        for row in (tx.conn.execute(query)).mappings():
            found.setdefault(row["evaluation_id"], {})[row["key"]] = row["value"]
    return found


def _next_seq(row: Row, stream: Stream) -> int:
    return int(row["stdout_next_seq" if stream is Stream.STDOUT else "stderr_next_seq"])


def evaluation_from_row(
    row: Row, labels: dict[str, str], output: dict[Stream, bytes] | None = None
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
        run_start_time=row["run_start_time"],
        run_end_time=row["run_end_time"],
        output_stored_time=row["output_stored_time"],
    )


def progress_from_row(row: Row) -> OutputProgress:
    """The stored-output progress columns of an evaluation row."""
    return OutputProgress(
        stdout_bytes=row["stdout_bytes"],
        stderr_bytes=row["stderr_bytes"],
        stdout_truncated=bool(row["stdout_truncated"]),
        stderr_truncated=bool(row["stderr_truncated"]),
    )


def _spec(row: Row, labels: dict[str, str]) -> Spec:
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


def _applied(row: Row) -> AppliedLimits | None:
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


def _result(row: Row) -> Result:
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
