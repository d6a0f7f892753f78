"""Per-tenant token buckets: one tenant's flood is answered RESOURCE_EXHAUSTED, not queued.

Each gateway holds the buckets in memory, so an admission costs no round trip. With several
gateways the buckets describe the tenant's traffic through all of them: every gateway also
charges what the others admitted (:meth:`RateLimiter.charge`, fed by ``usage.ClusterUsage``
from the reports gateways exchange over NATS), so a bucket may go below zero (a debt the
refill pays back) and a tenant over its limit is refused whichever gateway it reaches.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from evalmesh_common import ResourceExhausted

__all__ = ["RateLimiter"]


class RateLimiter:
    """Allows ``rate`` requests per second per tenant with bursts of up to ``burst``.

    Besides the buckets it keeps, per tenant it tracks, what this gateway admitted since it
    began tracking the tenant (:meth:`admitted`) and which tenants changed since the last
    :meth:`take_changed`, for the reports to the other gateways.
    """

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._admitted: dict[str, float] = {}
        self._changed: set[str] = set()
        # Called when a tenant changes while none had since the last take_changed().
        self.on_change: Callable[[], None] | None = None

    def acquire(self, tenant: str, cost: float = 1.0) -> None:
        """Take ``cost`` tokens from the tenant's bucket or raise ResourceExhausted."""
        now = self._clock()
        tokens, last = self._buckets.get(tenant, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < cost:
            self._buckets[tenant] = (tokens, now)
            wait = (cost - tokens) / self.rate
            raise ResourceExhausted(
                f"tenant rate limit of {self.rate:g} requests per second exceeded",
                retry_after=wait,
                reason="RATE_LIMITED",
            )
        self._buckets[tenant] = (tokens - cost, now)
        self._admitted[tenant] = self._admitted.get(tenant, 0.0) + cost
        if not self._changed and self.on_change is not None:
            self.on_change()  # the first news since the last report: one is due
        self._changed.add(tenant)

    def charge(self, tenant: str, cost: float) -> None:
        """Take ``cost`` tokens that another gateway admitted, down to at most one burst of debt."""
        tokens = self.level(tenant)
        self._buckets[tenant] = (max(-self.burst, tokens - cost), self._clock())

    def lower_to(self, tenant: str, tokens: float) -> None:
        """Lower the tenant's bucket to ``tokens`` if it holds more (a peer's view at a join)."""
        if tokens < self.level(tenant):
            self._buckets[tenant] = (max(-self.burst, tokens), self._clock())

    def level(self, tenant: str) -> float:
        """The tokens in the tenant's bucket now (``burst`` for a tenant not tracked)."""
        bucket = self._buckets.get(tenant)
        if bucket is None:
            return self.burst
        tokens, last = bucket
        return min(self.burst, tokens + (self._clock() - last) * self.rate)

    def admitted(self, tenant: str) -> float:
        """The cost this gateway admitted for ``tenant`` since it began tracking it."""
        return self._admitted.get(tenant, 0.0)

    def take_changed(self) -> set[str]:
        """The tenants that admitted something since the last call."""
        changed, self._changed = self._changed, set()
        return changed

    def tracked(self) -> Iterator[str]:
        """Every tenant with a bucket."""
        return iter(list(self._buckets))

    def forget_idle(self) -> None:
        """Drop the buckets that refilled completely (and their admitted totals).

        A tenant not tracked has a full bucket, so dropping them changes no decision; it keeps
        the table (and the reports) to the tenants that were busy lately.
        """
        for tenant in list(self._buckets):
            if tenant not in self._changed and self.level(tenant) >= self.burst:
                del self._buckets[tenant]
                self._admitted.pop(tenant, None)
