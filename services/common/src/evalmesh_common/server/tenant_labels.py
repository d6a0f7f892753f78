"""Bounded ``tenant`` label values for per-tenant metrics: the heavy tenants, the rest "other".

A label per tenant would give Prometheus one series per tenant that ever appears, which a
platform with many tenants (or a test suite making one per run) turns into a memory problem for
every process and for the Prometheus server. :class:`TenantLabels` hands out a tenant's own name
only to the heavy ones:

- it weighs tenants with a Space-Saving sketch (Metwally et al.) of ``capacity`` entries, which
  finds the heavy hitters of an unbounded stream in bounded memory, with a guaranteed lower bound
  for each tenant it holds;
- a tenant gets its own label once that bound reaches ``min_share`` of all the weight counted so
  far (at most ``1 / min_share`` tenants can hold such a share at once), and keeps it for the
  life of the process, so each series is an honest monotonic counter (a label that came and went
  would make ``rate()`` see resets);
- at most ``limit`` tenants ever get one; everything else is counted as ``other``. Early on, when
  little was counted, the first tenants all hold a large share; ``limit`` is meant to be a few
  times ``1 / min_share`` so that places remain for tenants that become heavy later.

What a tenant did before it got its label stays under ``other``: ``sum without (tenant)`` is
always the exact total, and a tenant's own series counts from the moment it became heavy.
"""

from __future__ import annotations

__all__ = ["OTHER", "TenantLabels"]

OTHER = "other"


class TenantLabels:
    """Chooses the ``tenant`` label value for each observation (call from one thread)."""

    def __init__(self, min_share: float = 0.05, limit: int = 50, capacity: int = 200) -> None:
        if not 0 < min_share <= 1 or not 0 < limit <= capacity:
            raise ValueError("need 0 < min_share <= 1 and 0 < limit <= capacity")
        self.min_share = min_share
        self.limit = limit
        self.capacity = capacity
        self._total = 0.0
        # tenant -> (estimated weight, overestimate): the Space-Saving counters.
        self._counters: dict[str, tuple[float, float]] = {}
        self._labelled: set[str] = set()

    @property
    def labelled(self) -> frozenset[str]:
        """The tenants that have their own label."""
        return frozenset(self._labelled)

    def label(self, tenant: str, weight: float = 1.0) -> str:
        """Count ``weight`` for ``tenant`` and return the label value to record it under."""
        self._total += weight
        if tenant in self._labelled:
            return tenant
        guaranteed = self._weigh(tenant, weight)
        heavy = guaranteed >= self.min_share * self._total
        if heavy and len(self._labelled) < self.limit and tenant != OTHER:
            self._labelled.add(tenant)
            return tenant
        return OTHER

    def _weigh(self, tenant: str, weight: float) -> float:
        """Add ``weight`` to ``tenant``'s counter; return the weight it surely had."""
        counters = self._counters
        if tenant in counters or len(counters) < self.capacity:
            estimate, error = counters.get(tenant, (0.0, 0.0))
        else:
            # The lightest counter makes room; the newcomer inherits its weight as an error bound
            # (it may have been seen before, evicted), which keeps every heavy hitter found.
            lightest = min(counters, key=lambda name: counters[name][0])
            estimate = error = counters.pop(lightest)[0]
        counters[tenant] = (estimate + weight, error)
        return estimate + weight - error
