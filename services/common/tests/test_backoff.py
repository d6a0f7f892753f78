"""Backoff grows with each failure, up to its cap, and jitters where asked."""

from __future__ import annotations

import pytest

from evalmesh_common.backoff import backoff_delay, exponential_delay


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


def test_the_exponential_delay_doubles_per_failure_up_to_its_cap_without_jitter() -> None:
    delays = [exponential_delay(n, base=0.5, cap=30) for n in range(1, 10)]
    assert delays == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    assert exponential_delay(10_000, base=0.05) == 60


def test_the_exponential_delay_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="counts from 1"):
        exponential_delay(0)
    with pytest.raises(ValueError, match="base"):
        exponential_delay(1, base=0)
