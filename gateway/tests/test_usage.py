"""Tenant limits over several gateways: what one gateway does with the reports of the others."""

from __future__ import annotations

import pytest

from evalmesh.gateway.v1 import usage_pb2
from evalmesh_common import ResourceExhausted
from evalmesh_gateway.ratelimit import RateLimiter
from evalmesh_gateway.usage import ClusterUsage, WatchCap


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Gateway:
    """One gateway's limiter, watch cap and usage book on a shared fake clock."""

    def __init__(self, name: str, clock: Clock, rate: float = 10, burst: float = 10) -> None:
        self.limiter = RateLimiter(rate=rate, burst=burst, clock=clock)
        self.watches = WatchCap(limit=3)
        self.usage = ClusterUsage(name, self.limiter, self.watches, clock=clock)

    def tell(self, other: Gateway, *, full: bool = False, hello: bool = False) -> None:
        for report in self.usage.report(full=full, hello=hello):
            other.usage.apply(report)

    def admit(self, count: int, tenant: str = "t") -> int:
        admitted = 0
        for _ in range(count):
            try:
                self.limiter.acquire(tenant)
            except ResourceExhausted:
                continue
            admitted += 1
        return admitted


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_a_tenant_over_its_limit_at_one_gateway_is_refused_at_the_other(clock: Clock) -> None:
    a, b = Gateway("a", clock), Gateway("b", clock)
    a.tell(b, full=True, hello=True)
    assert a.admit(10) == 10
    a.tell(b)
    assert b.admit(1) == 0


def test_two_gateways_together_admit_one_limit_not_two(clock: Clock) -> None:
    a, b = Gateway("a", clock), Gateway("b", clock)
    a.tell(b, full=True, hello=True)
    b.tell(a, full=True)
    admitted = 0
    for _ in range(100):  # 10 s of a flood at both, reports every 0.1 s
        admitted += a.admit(5) + b.admit(5)
        a.tell(b)
        b.tell(a)
        clock.now += 0.1
    # One burst plus 10 s at 10/s, plus what one gateway admits before it hears of the other.
    assert admitted <= 10 + 100 + 10


def test_a_lost_report_costs_nothing_because_totals_only_grow(clock: Clock) -> None:
    a, b = Gateway("a", clock), Gateway("b", clock)
    a.tell(b, full=True, hello=True)
    a.admit(4)
    a.usage.report(full=False)  # lost on the way
    a.admit(4)
    a.tell(b)
    assert b.limiter.level("t") == pytest.approx(2)


def test_a_new_gateway_starts_from_its_peers_levels_not_from_full_buckets(clock: Clock) -> None:
    a = Gateway("a", clock)
    a.admit(9)
    newcomer = Gateway("c", clock)
    a.tell(newcomer, full=True)
    assert newcomer.limiter.level("t") == pytest.approx(1)
    # What the peer admitted before is in that level, so it is not charged a second time.
    a.admit(1)
    a.tell(newcomer)
    assert newcomer.limiter.level("t") == pytest.approx(0)


def test_a_gateway_that_says_hello_or_is_new_gets_a_full_report_in_answer(clock: Clock) -> None:
    a, b = Gateway("a", clock), Gateway("b", clock)
    (hello,) = a.usage.report(full=True, hello=True)
    assert b.usage.apply(hello)
    (update,) = b.usage.report(full=True)
    assert a.usage.apply(update)  # a had never heard of b
    assert not b.usage.apply(a.usage.report(full=True)[0])


def test_the_debt_from_peers_is_at_most_one_burst(clock: Clock) -> None:
    a = Gateway("a", clock)
    a.usage.apply(usage_pb2.GatewayUsage(gateway_id="b"))
    a.usage.apply(
        usage_pb2.GatewayUsage(
            gateway_id="b", tenants=[usage_pb2.TenantUsage(tenant="t", admitted=1000)]
        )
    )
    assert a.limiter.level("t") == pytest.approx(-10)
    clock.now += 2  # 20 tokens at 10/s pay the debt back and refill the burst
    assert a.admit(10) == 10


def test_watches_open_at_other_gateways_count_toward_the_cap(clock: Clock) -> None:
    a, b = Gateway("a", clock), Gateway("b", clock)
    a.tell(b, full=True, hello=True)
    a.watches.enter("t")
    a.watches.enter("t")
    a.tell(b)
    b.watches.enter("t")
    with pytest.raises(ResourceExhausted) as raised:
        b.watches.enter("t")
    assert raised.value.reason == "TOO_MANY_WATCHES"
    a.watches.leave("t")
    a.tell(b)
    b.watches.enter("t")


def test_a_silent_gateway_is_forgotten_with_its_watches(clock: Clock) -> None:
    a, b = Gateway("a", clock), Gateway("b", clock)
    a.tell(b, full=True, hello=True)
    for _ in range(3):
        a.watches.enter("t")
    a.tell(b)
    assert b.usage.remote_watches("t") == 3
    clock.now += 4
    b.usage.sweep()
    assert b.usage.peers == 0
    b.watches.enter("t")


def test_a_tenant_a_peer_stops_reporting_is_forgotten(clock: Clock) -> None:
    a, b = Gateway("a", clock), Gateway("b", clock)
    a.tell(b, full=True, hello=True)
    a.watches.enter("t")
    a.tell(b)
    for _ in range(4):  # a keeps reporting, but no longer t (the report naming 0 was lost)
        clock.now += 1
        b.usage.apply(usage_pb2.GatewayUsage(gateway_id="a"))
        b.usage.sweep()
    assert b.usage.remote_watches("t") == 0
    assert b.usage.peers == 1


def test_own_reports_echoed_back_change_nothing(clock: Clock) -> None:
    a = Gateway("a", clock)
    a.admit(5)
    for report in a.usage.report(full=True):
        assert not a.usage.apply(report)
    assert a.limiter.level("t") == pytest.approx(5)


def test_reports_name_changed_tenants_and_full_reports_name_every_tracked_one(
    clock: Clock,
) -> None:
    a = Gateway("a", clock)
    a.admit(1, tenant="busy")
    a.watches.enter("watching")
    assert {u.tenant for r in a.usage.report(full=False) for u in r.tenants} == {
        "busy",
        "watching",
    }
    assert a.usage.report(full=False) == []
    (full,) = a.usage.report(full=True)
    assert {u.tenant for u in full.tenants} == {"busy", "watching"}
    clock.now += 1  # the bucket refills; the idle tenant is forgotten at the next sweep
    a.usage.sweep()
    (full,) = a.usage.report(full=True)
    assert {u.tenant for u in full.tenants} == {"watching"}


def test_news_is_announced_once_until_a_report_takes_it(clock: Clock) -> None:
    a = Gateway("a", clock)
    announced: list[int] = []
    a.usage.notify(lambda: announced.append(1))
    a.admit(3)
    assert len(announced) == 1  # one report is due; the rest rides along with it
    a.watches.enter("t")
    a.watches.enter("t")
    assert len(announced) == 2  # the watch count's first news since the last report
    a.usage.report(full=False)
    a.admit(1)
    assert len(announced) == 3
