"""Exponential backoff: the one formula every retry loop in the mesh waits by.

The n-th consecutive failure waits up to ``base * 2**(n-1)`` seconds, capped at ``cap``
(:func:`exponential_delay`). Loops that many processes run at once (an executor giving a job back
with ``msg.nak(delay=backoff_delay(deliveries))``, the reaper re-publishing, storage retrying a
busy database, a storage call from the executor) add jitter with :func:`backoff_delay`, so a
fleet that failed together does not retry together (see ``docs/queues.md``). A loop that only
one task runs (a warm pool refilling itself, one job published again) needs no jitter and waits
the plain exponential delay. User-caused outcomes are results, never failures: they are recorded
and acked, and never come back here.
"""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["backoff_delay", "exponential_delay"]


def exponential_delay(failures: int, *, base: float = 1.0, cap: float = 60.0) -> float:
    """Seconds to wait after the ``failures``-th consecutive failure (1 for the first): ``base``
    doubled per failure after the first, never more than ``cap``."""
    if failures < 1:
        raise ValueError("failures counts from 1")
    if base <= 0 or cap < base:
        raise ValueError("need 0 < base <= cap")
    return min(cap, base * 2.0 ** min(failures - 1, 62))


def backoff_delay(
    failures: int,
    *,
    base: float = 1.0,
    cap: float = 60.0,
    uniform: Callable[[float, float], float] = random.uniform,
) -> float:
    """:func:`exponential_delay` with "equal jitter": between half and all of it.

    Half the exponential delay is kept, the other half is random, so the wait always grows with
    the failure count yet two callers rarely pick the same moment.
    """
    ceiling = exponential_delay(failures, base=base, cap=cap)
    return ceiling / 2 + uniform(0.0, ceiling / 2)
