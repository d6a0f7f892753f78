"""The gateway's own Prometheus metrics: per-tenant counts with a bounded set of labels.

The gateway is where every request's tenant is known, so it counts per tenant what operators
ask about first: who submits, and who is being throttled. Tenants go through
:class:`~evalmesh_common.server.tenant_labels.TenantLabels`: the heavy ones by name, the rest as
``other``, so a platform with thousands of tenants keeps a few dozen series.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from evalmesh_common.server.tenant_labels import TenantLabels

__all__ = ["TenantMetrics"]


class TenantMetrics:
    """Evaluations created and requests refused by the rate limit, per tenant."""

    def __init__(self, registry: CollectorRegistry, tenants: TenantLabels | None = None) -> None:
        self._tenants = tenants or TenantLabels()
        self._created = Counter(
            "evalmesh_gateway_tenant_evaluations_created",
            "Evaluations created (not a repeated request_id), by tenant (the heavy ones by "
            "name, the rest 'other').",
            ["tenant"],
            registry=registry,
        )
        self._limited = Counter(
            "evalmesh_gateway_tenant_rate_limited",
            "Requests refused by the tenant's rate limit, by tenant (the heavy ones by name, "
            "the rest 'other').",
            ["tenant"],
            registry=registry,
        )

    def created(self, tenant: str, count: int = 1) -> None:
        """Count ``count`` evaluations created for ``tenant``."""
        if count > 0:
            self._created.labels(self._tenants.label(tenant, count)).inc(count)

    def rate_limited(self, tenant: str) -> None:
        """Count one request of ``tenant`` refused by its rate limit."""
        self._limited.labels(self._tenants.label(tenant)).inc()
