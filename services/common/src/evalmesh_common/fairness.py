"""Per-tenant caps on running work, so one tenant cannot take the whole executor pool.

A tenant may run at most ``min(max_running, max(1, floor(pool_slots * max_share)))`` evaluations
at once across the pool. Executors count what runs from the pool heartbeats in the executors
bucket (``PoolStatus.runs`` name each run's tenant); a job whose tenant is at its limit is given
back with a short delay (``nak``) instead of being claimed, and the slot takes the next job.
The scheduler separately caps how many evaluations one tenant may have queued. Pure Python.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping

__all__ = ["may_start", "running_by_tenant", "tenant_running_limit"]


def tenant_running_limit(pool_slots: int, max_share: float, max_running: int = 0) -> int:
    """The most evaluations one tenant may run at once; ``max_running`` 0 means no fixed cap."""
    if not 0 < max_share <= 1:
        raise ValueError("max_share must be in (0, 1]")
    by_share = max(1, math.floor(max(pool_slots, 0) * max_share))
    return min(max_running, by_share) if max_running > 0 else by_share


def running_by_tenant(tenants: Iterable[str]) -> Counter[str]:
    """Count running evaluations per tenant from the tenants of every run in the pool."""
    return Counter(tenants)


def may_start(tenant: str, running: Mapping[str, int], limit: int) -> bool:
    """Whether ``tenant`` may start one more evaluation under ``limit``."""
    return running.get(tenant, 0) < limit
