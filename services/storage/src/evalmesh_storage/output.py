"""Program output: chunks stored per (evaluation, stream, sequence), capped, read by offset.

Appends are idempotent on (evaluation, stream, sequence) and may arrive in any order. Each chunk
is checked against its stored neighbours (its offset must follow the one before it), so the
chunks form one byte stream without overlaps. The evaluation row keeps, per stream, the gapless
prefix: the next missing sequence and the bytes up to it, which is what reads return. Bytes past
the stream's cap (the applied ``max_output_bytes``) are dropped and the stream marked truncated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, insert, select, update

from evalmesh_storage.db import Tx
from evalmesh_storage.domain import DEFAULT_MAX_OUTPUT_BYTES, Chunk, OutputProgress, Stream
from evalmesh_storage.errors import EvaluationNotFound, invalid
from evalmesh_storage.models import evaluations, output_chunks
from evalmesh_storage.rows import Row, progress_from_row
from evalmesh_storage.state_machine import lock_running

__all__ = ["MAX_READ_BYTES", "append_output", "read_output"]

MAX_READ_BYTES = 1024 * 1024
_E = evaluations.c
_C = output_chunks.c
_KNOWN = select(_C.seq, _C.byte_offset, _C.length).where(
    _C.evaluation_id == bindparam("id"),
    _C.stream == bindparam("stream"),
    _C.seq >= bindparam("seq"),
)
_INSERT = insert(output_chunks)
_SET_PROGRESS = update(evaluations).where(_E.id == bindparam("row_id"))
_PROGRESS = select(
    _E.stdout_bytes,
    _E.stderr_bytes,
    _E.stdout_truncated,
    _E.stderr_truncated,
    _E.stdout_next_seq,
    _E.stderr_next_seq,
).where(_E.id == bindparam("id"))
_PROGRESS_OF_TENANT = _PROGRESS.where(_E.tenant == bindparam("tenant"))


@dataclass(slots=True)
class _StreamState:
    """One stream's stored prefix while an append is being applied."""

    stream: Stream
    stored: int
    next_seq: int
    truncated: bool
    # Known chunks at or after next_seq: sequence -> (offset, length as sent).
    known: dict[int, tuple[int, int]]

    def columns(self) -> dict[str, int | bool]:
        name = self.stream.name.lower()
        return {
            f"{name}_bytes": self.stored,
            f"{name}_next_seq": self.next_seq,
            f"{name}_truncated": self.truncated,
        }


def append_output(
    tx: Tx, evaluation_id: str, attempt: int, chunks: Sequence[Chunk]
) -> OutputProgress:
    """Store the running attempt's chunks; return what is stored now."""
    row = lock_running(tx, evaluation_id, attempt)
    cap = (
        row["applied_max_output_bytes"] or row["limit_max_output_bytes"] or DEFAULT_MAX_OUTPUT_BYTES
    )
    unique: dict[tuple[Stream, int], Chunk] = {}
    for index, chunk in enumerate(chunks):
        _check_chunk(index, chunk)
        unique.setdefault((chunk.stream, chunk.sequence), chunk)
    values: dict[str, int | bool] = {}
    for stream in Stream:
        mine = sorted((c for c in unique.values() if c.stream is stream), key=lambda c: c.sequence)
        if mine:
            state = _stream_state(tx, row, stream)
            _store(tx, evaluation_id, state, mine, cap)
            values.update(state.columns())
    if values:
        tx.conn.execute(_SET_PROGRESS, {"row_id": evaluation_id, **values})
    return progress_from_row({**row, **values})


def _check_chunk(index: int, chunk: Chunk) -> None:
    if not isinstance(chunk.stream, Stream):
        raise invalid(f"chunks[{index}].stream", "must be STDOUT or STDERR")
    if chunk.sequence < 0:
        raise invalid(f"chunks[{index}].sequence", "must not be negative")
    if chunk.offset < 0:
        raise invalid(f"chunks[{index}].offset", "must not be negative")


def _stream_state(tx: Tx, row: Row, stream: Stream) -> _StreamState:
    name = stream.name.lower()
    next_seq = int(row[f"{name}_next_seq"])
    params = {"id": row["id"], "stream": int(stream), "seq": next_seq}
    known = {r.seq: (r.byte_offset, r.length) for r in tx.conn.execute(_KNOWN, params)}
    return _StreamState(
        stream, int(row[f"{name}_bytes"]), next_seq, bool(row[f"{name}_truncated"]), known
    )


def _store(tx: Tx, evaluation_id: str, state: _StreamState, chunks: list[Chunk], cap: int) -> None:
    rows = []
    for chunk in chunks:
        if chunk.sequence < state.next_seq or chunk.sequence in state.known:
            continue  # stored before: first write wins
        if chunk.offset >= cap:
            state.truncated = True
            continue
        _check_neighbours(state, chunk)
        data = chunk.data[: cap - chunk.offset]
        state.truncated = state.truncated or len(data) < len(chunk.data)
        state.known[chunk.sequence] = (chunk.offset, len(chunk.data))
        rows.append(
            {
                "evaluation_id": evaluation_id,
                "stream": int(state.stream),
                "seq": chunk.sequence,
                "byte_offset": chunk.offset,
                "length": len(data),
                "data": data,
            }
        )
    if rows:
        tx.conn.execute(_INSERT, rows)
    _advance(state, cap)


def _check_neighbours(state: _StreamState, chunk: Chunk) -> None:
    expected = state.stored if chunk.sequence == state.next_seq else None
    before = state.known.get(chunk.sequence - 1)
    if before is not None:
        expected = before[0] + before[1]
    after = state.known.get(chunk.sequence + 1)
    end = chunk.offset + len(chunk.data)
    if (expected is not None and chunk.offset != expected) or (after and after[0] != end):
        raise invalid(
            "chunks",
            f"{state.stream.name} chunk {chunk.sequence} at offset {chunk.offset} does not "
            "continue the stored chunks",
        )


def _advance(state: _StreamState, cap: int) -> None:
    while state.next_seq in state.known:
        offset, length = state.known.pop(state.next_seq)
        state.stored = min(offset + length, cap)
        state.next_seq += 1


def read_output(
    tx: Tx, tenant: str, evaluation_id: str, stream: Stream, offset: int, max_bytes: int
) -> tuple[list[Chunk], OutputProgress]:
    """Return the stored bytes of ``stream`` from ``offset`` (at most ``max_bytes``)."""
    if offset < 0:
        raise invalid("offset", "must not be negative")
    if max_bytes < 0:
        raise invalid("max_bytes", "must not be negative")
    row = _progress_row(tx, tenant, evaluation_id)
    progress = progress_from_row(row)
    name = stream.name.lower()
    end = min(int(row[f"{name}_bytes"]), offset + min(max_bytes or MAX_READ_BYTES, MAX_READ_BYTES))
    if offset >= end:
        return [], progress
    query = (
        select(_C.seq, _C.byte_offset, _C.data)
        .where(
            _C.evaluation_id == evaluation_id,
            _C.stream == int(stream),
            _C.seq < row[f"{name}_next_seq"],
            _C.byte_offset < end,
            _C.byte_offset + _C.length > offset,
        )
        .order_by(_C.seq)
    )
    found = []
    for seq, start, data in tx.conn.execute(query):
        lo, hi = max(offset, start) - start, min(end, start + len(data)) - start
        found.append(Chunk(stream, seq, start + lo, bytes(data[lo:hi])))
    return found, progress


def _progress_row(tx: Tx, tenant: str, evaluation_id: str) -> Row:
    if tenant:
        query, params = _PROGRESS_OF_TENANT, {"id": evaluation_id, "tenant": tenant}
    else:
        query, params = _PROGRESS, {"id": evaluation_id}
    row = tx.conn.execute(query, params).mappings().first()
    if row is None:
        raise EvaluationNotFound(
            f"evaluation {evaluation_id!r} not found", metadata={"evaluation": evaluation_id}
        )
    return row
