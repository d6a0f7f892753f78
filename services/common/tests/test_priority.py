"""The executors' priority policy: weighted, interleaved, never starving, falling through."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from evalmesh_common.priority import (
    WeightedPriority,
    estimate_starts_before,
    start_order,
)
from evalmesh_common.subjects import PRIORITY_NAMES


def initials(order: list[str]) -> str:
    return "".join(name[0].upper() for name in order)


def test_one_slot_with_a_full_backlog_starts_six_high_three_normal_one_low_interleaved() -> None:
    order = start_order({"high": 12, "normal": 6, "low": 2})
    assert initials(order) == "HNHHNHLHNH" * 2


def test_a_drained_class_gives_its_share_to_the_others() -> None:
    order = start_order({"high": 2, "normal": 10, "low": 10})
    assert order[:4].count("high") == 2
    tail = Counter(order[4:16])
    assert (tail["normal"], tail["low"]) == (9, 3)  # 3:1 once HIGH is empty


def test_low_progresses_under_sustained_high_load() -> None:
    policy = WeightedPriority()
    ready = {"high", "low"}  # HIGH never runs dry; LOW has a backlog
    starts = []
    for _ in range(70):
        choice = policy.choose(ready)
        assert choice is not None
        policy.started(choice, ready)
        starts.append(choice)
    assert starts.count("low") == 10  # one in seven
    gaps = [i for i, name in enumerate(starts) if name == "low"]
    assert max(b - a for a, b in zip([-1, *gaps], gaps, strict=False)) <= 7


def test_an_empty_class_is_skipped_without_losing_its_turn_order() -> None:
    policy = WeightedPriority()
    assert policy.order({"high", "normal", "low"}) == ["high", "normal", "low"]
    policy.started("high", {"high", "normal", "low"})
    assert policy.order({"high", "normal", "low"})[0] == "normal"
    # NORMAL turns out to be empty: the slot falls through to the next class in the policy.
    assert policy.choose({"high", "low"}) == "high"


def test_choosing_alone_does_not_spend_a_turn() -> None:
    policy = WeightedPriority()
    for _ in range(5):
        assert policy.choose(PRIORITY_NAMES) == "high"


def test_an_idle_class_cannot_come_back_with_a_burst() -> None:
    policy = WeightedPriority()
    for _ in range(50):  # LOW had nothing queued for a long time
        policy.started("high", {"high"})
    picks = []
    for _ in range(7):
        choice = policy.choose({"high", "low"})
        assert choice is not None
        policy.started(choice, {"high", "low"})
        picks.append(choice)
    assert picks.count("low") == 1


def test_no_class_has_work_means_no_choice() -> None:
    assert WeightedPriority().choose(set()) is None
    assert WeightedPriority().order(()) == []


def test_unknown_classes_and_bad_weights_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown"):
        WeightedPriority().choose({"urgent"})
    with pytest.raises(ValueError, match="positive"):
        WeightedPriority({"high": 1, "normal": 0, "low": 1})
    with pytest.raises(ValueError, match="exactly"):
        WeightedPriority({"high": 1})


def test_the_position_estimate_stays_within_two_starts_of_the_policy() -> None:
    rng = random.Random(7)
    for _ in range(300):
        depths = {name: rng.randint(0, 40) for name in PRIORITY_NAMES}
        order = start_order(depths)
        for name in PRIORITY_NAMES:
            starts = [i for i, c in enumerate(order) if c == name]
            for rank, index in enumerate(starts):
                assert abs(estimate_starts_before(depths, name, rank) - index) <= 2


def test_the_position_estimate_is_cheap_for_a_huge_backlog() -> None:
    depths = {"high": 10**6, "normal": 10**6, "low": 10**6}
    # The policy starts the first LOW seventh, then one LOW in every ten starts.
    assert abs(estimate_starts_before(depths, "low", 0) - 6) <= 2
    assert abs(estimate_starts_before(depths, "low", 999) - (6 + 999 * 10)) <= 2
