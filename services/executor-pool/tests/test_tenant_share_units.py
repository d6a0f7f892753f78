"""What an executor asks storage to enforce for the tenant share, and how long it remembers a
refusal. Pure unit tests; the share itself is tested against storage and on a real mesh."""

from __future__ import annotations

import pytest

from evalmesh.executor.v1 import pool_pb2
from evalmesh_common import Seconds
from evalmesh_executor.config import TenantShareConfig
from evalmesh_executor.share import TenantShares, fair_running


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_fair_share_is_a_fraction_of_the_pool_and_at_least_one() -> None:
    assert fair_running(10, 0.5) == 5
    assert fair_running(3, 0.5) == 1
    assert fair_running(1, 0.25) == 1
    assert fair_running(8, 1.0) == 0  # 1 turns the share off


def test_no_share_is_sent_when_both_bounds_are_off() -> None:
    shares = TenantShares(TenantShareConfig(max_running=0, fair_share=1.0), own_slots=4)
    assert shares.limits() is None


def test_the_pool_size_comes_from_serving_executors_heartbeats() -> None:
    shares = TenantShares(TenantShareConfig(max_running=3, fair_share=0.5), own_slots=2)
    assert (shares.limits().max_running, shares.limits().fair_running) == (3, 1)  # type: ignore[union-attr]
    shares.count_pool(
        [
            pool_pb2.PoolStatus(slots=2, healthy=True),
            pool_pb2.PoolStatus(slots=6, healthy=True),
            pool_pb2.PoolStatus(slots=8, healthy=False),
            pool_pb2.PoolStatus(slots=8, healthy=True, draining=True),
        ]
    )
    assert shares.pool_slots == 8
    assert shares.limits().fair_running == 4  # type: ignore[union-attr]
    shares.count_pool([])  # the bucket is empty or unreadable: never below our own slots
    assert shares.pool_slots == 2


def test_a_refusal_is_remembered_until_it_expires_or_a_run_of_the_tenant_ends() -> None:
    clock = Clock()
    shares = TenantShares(TenantShareConfig(remember=Seconds(1.0)), own_slots=2, clock=clock)
    shares.refused("acme")
    assert shares.at_limit("acme")
    assert not shares.at_limit("globex")
    clock.now += 1.0
    assert not shares.at_limit("acme")
    shares.refused("acme")
    shares.ended("acme", "e1")
    assert not shares.at_limit("acme")
    shares.refused("acme")
    shares.sandbox_gone("acme", "e2")
    assert not shares.at_limit("acme")


def test_each_claim_names_the_runs_whose_sandbox_is_gone_until_they_end() -> None:
    shares = TenantShares(TenantShareConfig(fair_share=0.5), own_slots=2)
    shares.sandbox_gone("acme", "e1")
    shares.sandbox_gone("globex", "e2")
    assert list(shares.limits().ending) == ["e1", "e2"]  # type: ignore[union-attr]
    shares.ended("acme", "e1")
    assert list(shares.limits().ending) == ["e2"]  # type: ignore[union-attr]


def test_the_share_settings_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="fair_share"):
        TenantShareConfig(fair_share=0)
    with pytest.raises(ValueError, match="max_running"):
        TenantShareConfig(max_running=-1)
