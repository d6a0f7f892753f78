"""Retention: delete terminal evaluations, with their output and labels, past a given age."""

from __future__ import annotations

from sqlalchemy import delete, select

from evalmesh_storage.db import Tx
from evalmesh_storage.domain import TERMINAL_STATES
from evalmesh_storage.models import evaluation_labels, evaluations, output_chunks

__all__ = ["DEFAULT_PURGE_LIMIT", "MAX_PURGE_LIMIT", "purge"]

DEFAULT_PURGE_LIMIT = 1000
MAX_PURGE_LIMIT = 10_000
_BATCH = 200
_E = evaluations.c


def purge(tx: Tx, end_time_before: int, limit: int) -> int:
    """Delete up to ``limit`` terminal evaluations that ended before ``end_time_before``.

    Output goes first, in batches, so no statement touches an unbounded number of rows.
    Returns how many evaluations were deleted; call again until it returns 0.
    """
    wanted = min(limit, MAX_PURGE_LIMIT) if limit > 0 else DEFAULT_PURGE_LIMIT
    query = (
        select(_E.id)
        .where(_E.state.in_([int(s) for s in TERMINAL_STATES]), _E.end_time < end_time_before)
        .order_by(_E.end_time, _E.id)
        .limit(wanted)
    )
    ids = list((tx.conn.scalars(query)).all())
    for start in range(0, len(ids), _BATCH):
        batch = ids[start : start + _BATCH]
        tx.conn.execute(delete(output_chunks).where(output_chunks.c.evaluation_id.in_(batch)))
        tx.conn.execute(
            delete(evaluation_labels).where(evaluation_labels.c.evaluation_id.in_(batch))
        )
        tx.conn.execute(delete(evaluations).where(_E.id.in_(batch)))
    return len(ids)
