"""Queries the control plane runs over the queue: publications, expired leases, positions, stats.

None of these change an evaluation's state (that is ``state_machine``'s job); publication
bookkeeping only notes when a QUEUED evaluation's job was handed to the work queue.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import and_, func, or_, select, update

from evalmesh_storage.db import Tx
from evalmesh_storage.domain import Evaluation, Priority, QueueDepth, State, Stats, View
from evalmesh_storage.models import evaluations
from evalmesh_storage.rows import fetch_evaluations
from evalmesh_storage.validation import check_text

__all__ = [
    "list_expired_leases",
    "list_unpublished",
    "position",
    "record_publications",
    "stats",
]

_E = evaluations.c
_MINUTE_US = 60_000_000
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def _limit(limit: int) -> int:
    return min(limit, MAX_LIMIT) if limit > 0 else DEFAULT_LIMIT


async def record_publications(tx: Tx, ids: Sequence[str]) -> int:
    """Note that the jobs of these QUEUED evaluations were just published; return how many."""
    now = await tx.now()
    recorded = 0
    wanted = sorted(set(ids))
    for index, evaluation_id in enumerate(wanted):
        check_text(f"ids[{index}]", evaluation_id, 64)
    for start in range(0, len(wanted), 500):
        statement = (
            update(evaluations)
            .where(_E.id.in_(wanted[start : start + 500]), _E.state == int(State.QUEUED))
            .values(publish_time=now, publish_count=_E.publish_count + 1)
        )
        recorded += (await tx.conn.execute(statement)).rowcount
    return recorded


async def list_unpublished(tx: Tx, published_before: int | None, limit: int) -> list[Evaluation]:
    """QUEUED evaluations never published (or last published before a time), oldest first."""
    never = _E.publish_time.is_(None)
    stale = never if published_before is None else or_(never, _E.publish_time < published_before)
    return await fetch_evaluations(
        tx,
        _E.state == int(State.QUEUED),
        stale,
        view=View.BASIC,
        order_by=(_E.create_time, _E.id),
        limit=_limit(limit),
    )


async def list_expired_leases(tx: Tx, limit: int) -> list[Evaluation]:
    """RUNNING evaluations whose lease ended on the database clock, longest expired first."""
    now = await tx.now()
    return await fetch_evaluations(
        tx,
        _E.state == int(State.RUNNING),
        _E.lease_expires_at <= now,
        view=View.BASIC,
        order_by=(_E.lease_expires_at, _E.id),
        limit=_limit(limit),
    )


async def position(tx: Tx, evaluation: Evaluation) -> tuple[int, int | None]:
    """How many QUEUED evaluations start before this one, and the estimated start time.

    Ahead means a higher priority class, or the same class and created earlier. The estimate
    assumes the last minute's completion rate; None when nothing completed recently.
    """
    priority = int(evaluation.spec.priority)
    same_class_earlier = and_(
        _E.priority == priority,
        or_(
            _E.create_time < evaluation.create_time,
            and_(_E.create_time == evaluation.create_time, _E.id < evaluation.id),
        ),
    )
    ahead = await tx.conn.scalar(
        select(func.count())
        .select_from(evaluations)
        .where(_E.state == int(State.QUEUED), or_(_E.priority < priority, same_class_earlier))
    )
    now = await tx.now()
    rate = await _completed_since(tx, now - _MINUTE_US, tenant="")
    estimate = now + (int(ahead or 0) + 1) * _MINUTE_US // rate if rate else None
    return int(ahead or 0), estimate


async def _completed_since(tx: Tx, since: int, tenant: str) -> int:
    query = select(func.count()).select_from(evaluations).where(_E.end_time >= since)
    if tenant:
        query = query.where(_E.tenant == tenant)
    return int(await tx.conn.scalar(query) or 0)


async def stats(tx: Tx, tenant: str) -> Stats:
    """Counts per state, the queue per priority with its oldest wait, and recent completions."""
    scope = [_E.tenant == tenant] if tenant else []
    by_state = select(_E.state, func.count()).where(*scope).group_by(_E.state)
    counts = {State(state): int(count) for state, count in await tx.conn.execute(by_state)}
    queued_query = (
        select(_E.priority, func.count(), func.min(_E.create_time))
        .where(_E.state == int(State.QUEUED), *scope)
        .group_by(_E.priority)
    )
    now = await tx.now()
    found = {row[0]: (int(row[1]), int(row[2])) for row in await tx.conn.execute(queued_query)}
    queued = [
        QueueDepth(
            p, found[p][0] if p in found else 0, max(0, now - found[p][1]) if p in found else 0
        )
        for p in Priority
    ]
    recent = await _completed_since(tx, now - _MINUTE_US, tenant)
    return Stats(state_counts=counts, queued=queued, completed_last_minute=recent)
