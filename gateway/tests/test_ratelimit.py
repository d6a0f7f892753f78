"""One tenant's flood is refused with a retry hint; other tenants are unaffected."""

from __future__ import annotations

import pytest

from evalmesh_common import ResourceExhausted
from evalmesh_gateway.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_tenant_over_its_burst_is_refused_with_a_retry_hint_and_others_are_not() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=10, burst=3, clock=clock)
    for _ in range(3):
        limiter.acquire("flood")
    with pytest.raises(ResourceExhausted) as raised:
        limiter.acquire("flood")
    assert raised.value.retry_after == pytest.approx(0.1)
    limiter.acquire("quiet")


def test_tokens_refill_with_time() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=10, burst=1, clock=clock)
    limiter.acquire("t")
    clock.now += 0.1
    limiter.acquire("t")
