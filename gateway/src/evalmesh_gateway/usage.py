"""Per-tenant limits over every gateway: the reports gateways exchange, and what each one does
with the reports of the others.

Each gateway decides alone, from memory, so the hot path costs no round trip; what it decides
on is the traffic of all gateways. When a tenant changes, a gateway reports within a sync
interval of its last report (and not before), for the tenants that changed, what it admitted (a
total that only grows, so a lost report costs nothing), its bucket level and its open watches;
once a second it reports every tenant it tracks. A receiver charges
the growth of each peer's total to its own bucket (:meth:`RateLimiter.charge`) and adds the
peers' open watches to its own count. A gateway it has never heard of is not charged for what it
admitted before: the receiver is the new one, so it lowers its buckets to the peer's levels
instead. A peer silent for ``peer_timeout`` is forgotten with its watches, and so is a tenant
a peer stopped reporting.

The figures are at most a sync interval old, so a tenant spraying requests over N gateways can
pass its limit by what N-1 gateways admit in one interval; the decision and its measured cost
are in ``docs/architecture.md`` (Per-tenant limits over many gateways).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator

from evalmesh.gateway.v1 import usage_pb2
from evalmesh_common import ResourceExhausted
from evalmesh_gateway.ratelimit import RateLimiter

__all__ = ["ClusterUsage", "WatchCap"]

# A report stays well under NATS's default 1 MiB payload limit with this many tenants in it.
MAX_TENANTS_PER_REPORT = 5_000


class WatchCap:
    """At most ``limit`` open WatchEvaluation streams per tenant, over every gateway."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        # The open watches at the other gateways; ClusterUsage installs its own.
        self.remote: Callable[[str], int] = lambda tenant: 0
        self._open: dict[str, int] = {}
        self._changed: set[str] = set()
        # Called when a tenant changes while none had since the last take_changed().
        self.on_change: Callable[[], None] | None = None

    def enter(self, tenant: str) -> None:
        """Count one more open watch of ``tenant``, or raise ResourceExhausted at the cap."""
        if self._open.get(tenant, 0) + self.remote(tenant) >= self.limit:
            raise ResourceExhausted(
                f"at most {self.limit} open watches per tenant",
                retry_after=1.0,
                reason="TOO_MANY_WATCHES",
            )
        self._open[tenant] = self._open.get(tenant, 0) + 1
        self._changed_now(tenant)

    def leave(self, tenant: str) -> None:
        """Count one watch of ``tenant`` fewer."""
        count = self._open.get(tenant, 0) - 1
        if count > 0:
            self._open[tenant] = count
        else:
            self._open.pop(tenant, None)
        self._changed_now(tenant)

    def _changed_now(self, tenant: str) -> None:
        if not self._changed and self.on_change is not None:
            self.on_change()
        self._changed.add(tenant)

    def open(self, tenant: str) -> int:
        """The watches of ``tenant`` open at this gateway."""
        return self._open.get(tenant, 0)

    def take_changed(self) -> set[str]:
        """The tenants whose count changed since the last call."""
        changed, self._changed = self._changed, set()
        return changed

    def tracked(self) -> Iterator[str]:
        """Every tenant with a watch open here."""
        return iter(list(self._open))


@dataclasses.dataclass
class _Entry:
    admitted: float
    watches: int
    seen: float


@dataclasses.dataclass
class _Peer:
    seen: float
    tenants: dict[str, _Entry] = dataclasses.field(default_factory=dict)


class ClusterUsage:
    """This gateway's reports, and the last report of every other gateway."""

    def __init__(
        self,
        gateway_id: str,
        limiter: RateLimiter,
        watches: WatchCap,
        peer_timeout: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gateway_id = gateway_id
        self.limiter = limiter
        self.watches = watches
        self.peer_timeout = peer_timeout
        self._clock = clock
        self._peers: dict[str, _Peer] = {}
        watches.remote = self.remote_watches

    def notify(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when a tenant changes here and no report has named it yet."""
        self.limiter.on_change = callback
        self.watches.on_change = callback

    @property
    def peers(self) -> int:
        """How many other gateways reported within ``peer_timeout``."""
        return len(self._peers)

    def remote_watches(self, tenant: str) -> int:
        """The watches of ``tenant`` open at the other gateways, as they last reported."""
        total = 0
        for peer in self._peers.values():
            entry = peer.tenants.get(tenant)
            if entry is not None:
                total += entry.watches
        return total

    def report(self, *, full: bool, hello: bool = False) -> list[usage_pb2.GatewayUsage]:
        """This gateway's reports: the tenants that changed, or (``full``) every tracked one.

        A full report is sent even when it names no tenant, so peers know the sender lives.
        """
        changed = self.limiter.take_changed() | self.watches.take_changed()
        if full:
            changed.update(self.limiter.tracked(), self.watches.tracked())
        elif not changed:
            return []
        tenants = [self._usage(tenant) for tenant in sorted(changed)]
        chunks = [
            tenants[start : start + MAX_TENANTS_PER_REPORT]
            for start in range(0, len(tenants), MAX_TENANTS_PER_REPORT)
        ] or [[]]
        return [
            usage_pb2.GatewayUsage(gateway_id=self.gateway_id, hello=hello, tenants=chunk)
            for chunk in chunks
        ]

    def _usage(self, tenant: str) -> usage_pb2.TenantUsage:
        return usage_pb2.TenantUsage(
            tenant=tenant,
            admitted=self.limiter.admitted(tenant),
            tokens=self.limiter.level(tenant),
            open_watches=self.watches.open(tenant),
        )

    def apply(self, report: usage_pb2.GatewayUsage) -> bool:
        """Take in another gateway's report; True when it wants a full report in answer (it
        said hello, or this gateway had not heard of it)."""
        if report.gateway_id == self.gateway_id:
            return False  # our own, echoed by NATS
        now = self._clock()
        peer = self._peers.get(report.gateway_id)
        first = peer is None
        if peer is None:
            peer = self._peers[report.gateway_id] = _Peer(seen=now)
        peer.seen = now
        for usage in report.tenants:
            self._apply_tenant(peer, usage, first, now)
        return report.hello or first

    def _apply_tenant(
        self, peer: _Peer, usage: usage_pb2.TenantUsage, first: bool, now: float
    ) -> None:
        entry = peer.tenants.get(usage.tenant)
        peer.tenants[usage.tenant] = _Entry(usage.admitted, usage.open_watches, now)
        if first:
            # What a gateway we never heard of admitted before is in its levels, not in news.
            self.limiter.lower_to(usage.tenant, usage.tokens)
            return
        # A total below the last one means the peer forgot the tenant and began again at 0.
        grown = (
            usage.admitted
            if entry is None or usage.admitted < entry.admitted
            else (usage.admitted - entry.admitted)
        )
        if grown > 0:
            self.limiter.charge(usage.tenant, grown)

    def sweep(self) -> None:
        """Forget silent peers, tenants a peer no longer reports, and our own idle buckets."""
        deadline = self._clock() - self.peer_timeout
        for peer_id, peer in list(self._peers.items()):
            if peer.seen < deadline:
                del self._peers[peer_id]
                continue
            for tenant, entry in list(peer.tenants.items()):
                if entry.seen < deadline:
                    del peer.tenants[tenant]
        self.limiter.forget_idle()
