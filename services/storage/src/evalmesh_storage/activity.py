"""Throughput and queue waits over a recent window, from the stored timestamps.

Completions are counted by ``end_time`` and claims by ``start_time``, each bucket by a ``GROUP BY``
over its index, so the counts are exact however busy the window was. A wait is how long an
evaluation waited from its acceptance to the claim of its latest attempt (``start_time -
create_time``); the waits of at most :data:`MAX_WAITS` claims, the newest, are read and their
percentiles taken here (nearest rank: a reported p90 is a wait that really happened). SQLite has
no percentile function and PostgreSQL's would sort the same rows anyway; the cap bounds one call's
cost on a very busy cluster, and the summary's ``count`` says when it applied.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from sqlalchemy import BigInteger, ColumnElement, Select, bindparam, func, select

from evalmesh_storage.db import Tx
from evalmesh_storage.domain import Activity, ActivityBucket, WaitSummary
from evalmesh_storage.errors import invalid
from evalmesh_storage.models import evaluations

__all__ = ["DEFAULT_BUCKETS", "DEFAULT_WINDOW_US", "MAX_WAITS", "activity", "summarize"]

_E = evaluations.c
_MINUTE_US = 60_000_000
DEFAULT_WINDOW_US = 60 * _MINUTE_US
MAX_WINDOW_US = 24 * 60 * _MINUTE_US
DEFAULT_BUCKETS = 60
MAX_BUCKETS = 1440
MAX_WAITS = 100_000

_START = bindparam("start", type_=BigInteger)
_WIDTH = bindparam("width", type_=BigInteger)


def _per_bucket(column: ColumnElement[int]) -> Select[int, int]:
    bucket = ((column - _START) // _WIDTH).label("bucket")
    return select(bucket, func.count()).where(column >= _START).group_by(bucket)


_COMPLETED = _per_bucket(_E.end_time)
_STARTED = _per_bucket(_E.start_time)
_WAITS = (
    select(_E.start_time, _E.start_time - _E.create_time)
    .where(_E.start_time >= _START)
    .order_by(_E.start_time.desc())
    .limit(MAX_WAITS)
)


def check_window(window_us: int | None, buckets: int) -> tuple[int, int]:
    """The window and bucket count to use (defaults for unset ones), or a field violation."""
    window = DEFAULT_WINDOW_US if window_us is None else window_us
    if not _MINUTE_US <= window <= MAX_WINDOW_US:
        raise invalid("window", "must be between 1 minute and 24 hours")
    count = buckets or DEFAULT_BUCKETS
    if not 1 <= count <= MAX_BUCKETS:
        raise invalid("buckets", f"must be between 1 and {MAX_BUCKETS}")
    return window, count


def activity(tx: Tx, window_us: int, buckets: int) -> Activity:
    """Completions, claims and waits per bucket over the last ``window_us`` (database clock)."""
    now = tx.now()
    width = -(-window_us // buckets)  # buckets of equal width that end exactly now
    start = now - width * buckets
    params = {"start": start, "width": width}
    completed = _counts(tx, _COMPLETED, params)
    started = _counts(tx, _STARTED, params)
    waits: list[list[int]] = [[] for _ in range(buckets)]
    for claimed, wait in tx.conn.execute(_WAITS, params):
        index = (int(claimed) - start) // width
        if 0 <= index < buckets:
            waits[index].append(max(0, int(wait)))
    return Activity(
        start_time=start,
        end_time=now,
        bucket_us=width,
        buckets=[
            ActivityBucket(
                start_time=start + index * width,
                completed=completed.get(index, 0),
                started=started.get(index, 0),
                wait=summarize(waits[index]),
            )
            for index in range(buckets)
        ],
        completed=sum(n for i, n in completed.items() if 0 <= i < buckets),
        started=sum(n for i, n in started.items() if 0 <= i < buckets),
        wait=summarize([wait for bucket in waits for wait in bucket]),
    )


def _counts(tx: Tx, query: Select[int, int], params: dict[str, int]) -> dict[int, int]:
    return {int(bucket): int(count) for bucket, count in tx.conn.execute(query, params)}


def summarize(waits: Sequence[int]) -> WaitSummary | None:
    """Nearest-rank percentiles of ``waits`` (microseconds), or None when there are none."""
    if not waits:
        return None
    ordered = sorted(waits)

    def rank(percent: int) -> int:
        return ordered[max(0, math.ceil(percent / 100 * len(ordered)) - 1)]

    return WaitSummary(len(ordered), rank(50), rank(90), rank(99), ordered[-1])
