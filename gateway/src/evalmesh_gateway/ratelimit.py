"""Per-tenant token buckets: one tenant's flood is answered RESOURCE_EXHAUSTED, not queued."""

from __future__ import annotations

import time
from collections.abc import Callable

from evalmesh_common import ResourceExhausted

__all__ = ["RateLimiter"]


class RateLimiter:
    """Allows ``rate`` requests per second per tenant with bursts of up to ``burst``."""

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

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
