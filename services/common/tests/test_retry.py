"""Backoff for platform faults grows and jitters; tenant caps bound a tenant's share of the pool."""

from __future__ import annotations

import pytest

from evalmesh_common.fairness import may_start, running_by_tenant, tenant_running_limit
from evalmesh_common.retry import backoff_delay


def test_backoff_doubles_per_failure_within_equal_jitter_bounds() -> None:
    lowest = [backoff_delay(n, base=1, cap=60, uniform=lambda a, b: a) for n in range(1, 9)]
    highest = [backoff_delay(n, base=1, cap=60, uniform=lambda a, b: b) for n in range(1, 9)]
    assert lowest == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert highest == [1, 2, 4, 8, 16, 32, 60, 60]


def test_backoff_is_random_between_its_bounds() -> None:
    delays = {backoff_delay(4) for _ in range(50)}
    assert len(delays) > 1
    assert all(4 <= d <= 8 for d in delays)


def test_backoff_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="counts from 1"):
        backoff_delay(0)
    with pytest.raises(ValueError, match="base"):
        backoff_delay(1, base=5, cap=1)


def test_a_tenant_may_hold_at_most_its_share_of_the_pool() -> None:
    limit = tenant_running_limit(pool_slots=10, max_share=0.5)
    running = running_by_tenant(["a", "a", "a", "a", "b"])
    assert limit == 5
    assert may_start("a", running, limit)
    running["a"] += 1
    assert not may_start("a", running, limit)
    assert may_start("b", running, limit)


def test_a_fixed_cap_and_a_tiny_pool_still_let_every_tenant_run_one() -> None:
    assert tenant_running_limit(pool_slots=100, max_share=0.5, max_running=8) == 8
    assert tenant_running_limit(pool_slots=1, max_share=0.25) == 1
    with pytest.raises(ValueError, match="max_share"):
        tenant_running_limit(pool_slots=4, max_share=0)
