"""Queries the control plane runs over the queue: publications, expired leases, positions, stats.

None of these change an evaluation's state (that is ``state_machine``'s job); publication
bookkeeping only notes when a QUEUED evaluation's job was handed to the work queue.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import and_, bindparam, func, or_, select, tuple_, update

from evalmesh_storage.db import Tx
from evalmesh_storage.domain import Evaluation, Priority, QueueDepth, State, Stats, View
from evalmesh_storage.errors import invalid
from evalmesh_storage.models import evaluations
from evalmesh_storage.rows import fetch_evaluations
from evalmesh_storage.tokens import PageTokens
from evalmesh_storage.validation import check_text, require

__all__ = [
    "list_expired_leases",
    "list_leases",
    "list_queued",
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


def record_publications(tx: Tx, ids: Sequence[str]) -> int:
    """Note that the jobs of these QUEUED evaluations were just published; return how many."""
    now = tx.now()
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
        recorded += (tx.conn.execute(statement)).rowcount
    return recorded


def list_unpublished(tx: Tx, published_before: int | None, limit: int) -> list[Evaluation]:
    """QUEUED evaluations never published (or last published before a time), oldest first."""
    never = _E.publish_time.is_(None)
    stale = never if published_before is None else or_(never, _E.publish_time < published_before)
    return fetch_evaluations(
        tx,
        _E.state == int(State.QUEUED),
        stale,
        view=View.BASIC,
        order_by=(_E.create_time, _E.id),
        limit=_limit(limit),
    )


def list_expired_leases(tx: Tx, limit: int) -> list[Evaluation]:
    """RUNNING evaluations whose lease ended on the database clock, longest expired first."""
    now = tx.now()
    return fetch_evaluations(
        tx,
        _E.state == int(State.RUNNING),
        _E.lease_expires_at <= now,
        view=View.BASIC,
        order_by=(_E.lease_expires_at, _E.id),
        limit=_limit(limit),
    )


def list_leases(tx: Tx, executor_id: str, limit: int) -> list[Evaluation]:
    """The RUNNING evaluations ``executor_id`` holds, expired or not, oldest claim first."""
    require("executor_id", executor_id, 256)
    return fetch_evaluations(
        tx,
        _E.state == int(State.RUNNING),
        _E.executor_id == executor_id,
        view=View.BASIC,
        order_by=(_E.start_time, _E.id),
        limit=_limit(limit),
    )


_QUEUE_ORDER = (_E.priority, _E.create_time, _E.id)  # the ix_evaluations_queue order
_QUEUED_TOKENS = "queued"


def list_queued(
    tx: Tx, published_before: int, page_size: int, page_token: str, tokens: PageTokens
) -> tuple[list[Evaluation], str]:
    """One page of QUEUED evaluations published before a time, in queue order, and the token
    of the next page ("" once the end is reached).

    A keyset walk over the queue index, so a page costs the same wherever it starts; the
    scheduler walks the whole queue a few pages at a time to check that every job is present.
    """
    where = [_E.state == int(State.QUEUED), _E.publish_time < published_before]
    if page_token:
        create_time, key = tokens.parse(page_token, _QUEUED_TOKENS, "", {})
        priority, _, last_id = key.partition(":")
        if not priority.isdigit() or not last_id:
            raise invalid("page_token", "the page token is malformed")
        where.append(tuple_(*_QUEUE_ORDER) > tuple_(int(priority), create_time, last_id))
    size = _limit(page_size)
    rows = fetch_evaluations(tx, *where, view=View.BASIC, order_by=_QUEUE_ORDER, limit=size + 1)
    if len(rows) <= size:
        return rows, ""
    last = rows[size - 1]
    cursor = (last.create_time, f"{int(last.spec.priority)}:{last.id}")
    return rows[:size], tokens.issue(_QUEUED_TOKENS, "", {}, cursor)


_QUEUED = _E.state == int(State.QUEUED)
# Two index ranges (state, priority, create_time, id) rather than one OR the planner may scan.
_AHEAD_IN_HIGHER_CLASSES = select(func.count()).where(_QUEUED, _E.priority < bindparam("p"))
_AHEAD_IN_ITS_CLASS = select(func.count()).where(
    _QUEUED,
    _E.priority == bindparam("p"),
    or_(
        _E.create_time < bindparam("t"),
        and_(_E.create_time == bindparam("t"), _E.id < bindparam("id")),
    ),
)
_RATE_TTL_US = 1_000_000
_RATE_MEMO = "queue.recent_rate"  # (when counted, completions in the minute before)


def position(tx: Tx, evaluation: Evaluation) -> tuple[int, int | None]:
    """How many QUEUED evaluations start before this one, and the estimated start time.

    Ahead means a higher priority class, or the same class and created earlier. The estimate
    assumes the last minute's completion rate (re-counted at most once a second: it is an
    estimate, and counting a busy minute costs more than the rest of the read); None when
    nothing completed recently.
    """
    params = {"p": int(evaluation.spec.priority), "t": evaluation.create_time, "id": evaluation.id}
    ahead = int(tx.conn.scalar(_AHEAD_IN_HIGHER_CLASSES, params) or 0)
    ahead += int(tx.conn.scalar(_AHEAD_IN_ITS_CLASS, params) or 0)
    now = tx.now()
    rate = _recent_rate(tx, now)
    estimate = now + (ahead + 1) * _MINUTE_US // rate if rate else None
    return ahead, estimate


def _recent_rate(tx: Tx, now: int) -> int:
    seen_at, rate = tx.memo.get(_RATE_MEMO, (0, 0))
    if not 0 <= now - seen_at < _RATE_TTL_US:
        rate = _completed_since(tx, now - _MINUTE_US, tenant="")
        tx.memo[_RATE_MEMO] = (now, rate)
    return int(rate)


def _completed_since(tx: Tx, since: int, tenant: str) -> int:
    query = select(func.count()).select_from(evaluations).where(_E.end_time >= since)
    if tenant:
        query = query.where(_E.tenant == tenant)
    return int(tx.conn.scalar(query) or 0)


def stats(tx: Tx, tenant: str) -> Stats:
    """Counts per state, the queue per priority with its oldest wait, and recent completions."""
    scope = [_E.tenant == tenant] if tenant else []
    by_state = select(_E.state, func.count()).where(*scope).group_by(_E.state)
    counts = {State(state): int(count) for state, count in tx.conn.execute(by_state)}
    queued_query = (
        select(_E.priority, func.count(), func.min(_E.create_time))
        .where(_E.state == int(State.QUEUED), *scope)
        .group_by(_E.priority)
    )
    now = tx.now()
    found = {row[0]: (int(row[1]), int(row[2])) for row in tx.conn.execute(queued_query)}
    queued = [
        QueueDepth(
            p, found[p][0] if p in found else 0, max(0, now - found[p][1]) if p in found else 0
        )
        for p in Priority
    ]
    recent = _completed_since(tx, now - _MINUTE_US, tenant)
    return Stats(state_counts=counts, queued=queued, completed_last_minute=recent)
