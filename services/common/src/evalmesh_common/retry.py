"""Exponential backoff with jitter for platform faults (see ``docs/queues.md``).

An executor that hits a platform fault before it could record a result (sandbox backend down,
storage unreachable) gives the job back with ``msg.nak(delay=backoff_delay(deliveries))``: the
n-th failure waits between half and all of ``base * 2**(n-1)`` seconds, capped, so a fleet of
executors that failed together does not retry together. User-caused outcomes are results, never
failures: they are recorded and acked, and never come back here.
"""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["backoff_delay"]


def backoff_delay(
    failures: int,
    *,
    base: float = 1.0,
    cap: float = 60.0,
    uniform: Callable[[float, float], float] = random.uniform,
) -> float:
    """Seconds to wait after the ``failures``-th consecutive failure (1 for the first).

    "Equal jitter": half the exponential delay is kept, the other half is random, so the wait
    always grows with the failure count yet two callers rarely pick the same moment.
    """
    if failures < 1:
        raise ValueError("failures counts from 1")
    if base <= 0 or cap < base:
        raise ValueError("need 0 < base <= cap")
    ceiling = min(cap, base * 2.0 ** min(failures - 1, 62))
    return ceiling / 2 + uniform(0.0, ceiling / 2)
