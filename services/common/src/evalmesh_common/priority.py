"""Which priority class an executor's free slot takes its next job from.

The policy is smooth weighted round-robin (the nginx upstream algorithm) over the classes that
have work, with weights HIGH 6, NORMAL 3, LOW 1. While all three classes wait, every ten starts are
six HIGH, three NORMAL and one LOW, interleaved (H N H H N H L H N H) rather than in bursts; a
class with no work is skipped and its share goes to the others, so an idle pool never waits on an
empty class, and LOW still gets one start in seven under a flood of HIGH. See ``docs/queues.md``.

Executors hold one :class:`WeightedPriority` per process and use it like this::

    ready = set(PRIORITY_NAMES)             # classes believed to have work
    while (choice := policy.choose(ready)) is not None:
        job = fetch_one(job_consumer(choice))
        if job is None:                      # that class is empty: fall through to the others
            ready.discard(choice)
            continue
        policy.started(choice, ready)        # credit the start only once a job was taken
        break

The scheduler uses :func:`estimate_starts_before` for queue positions. Pure Python, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from evalmesh_common.subjects import PRIORITY_NAMES

__all__ = [
    "DEFAULT_WEIGHTS",
    "WeightedPriority",
    "estimate_starts_before",
    "start_order",
]

DEFAULT_WEIGHTS: Mapping[str, int] = {"high": 6, "normal": 3, "low": 1}
_RANK = {name: index for index, name in enumerate(PRIORITY_NAMES)}


def _check_weights(weights: Mapping[str, int]) -> dict[str, int]:
    if set(weights) != set(PRIORITY_NAMES):
        raise ValueError(f"weights must name exactly {PRIORITY_NAMES}")
    if any(weight <= 0 for weight in weights.values()):
        raise ValueError("weights must be positive")
    return dict(weights)


class WeightedPriority:
    """Smooth weighted round-robin over the priority classes that have work.

    Each class keeps a running credit. A start adds every ready class's weight to its credit,
    picks the class with the most credit (ties go to the higher priority) and takes the ready
    classes' total weight from the one picked. Empty classes neither earn nor spend credit, so a
    class that was idle cannot come back with a burst.
    """

    def __init__(self, weights: Mapping[str, int] = DEFAULT_WEIGHTS) -> None:
        self.weights = _check_weights(weights)
        self._credit = dict.fromkeys(PRIORITY_NAMES, 0)

    def choose(self, ready: Iterable[str]) -> str | None:
        """The class the next start should come from, or None when no class has work.

        Choosing changes nothing: call :meth:`started` once a job was really taken.
        """
        candidates = self._ready(ready)
        if not candidates:
            return None
        return max(candidates, key=lambda c: (self._credit[c] + self.weights[c], -_RANK[c]))

    def order(self, ready: Iterable[str]) -> list[str]:
        """Every ready class in the order to try them: the choice, then the rest by priority."""
        candidates = self._ready(ready)
        first = self.choose(candidates)
        return [] if first is None else [first, *(c for c in candidates if c != first)]

    def started(self, chosen: str, ready: Iterable[str]) -> None:
        """Record that a job of ``chosen`` started while the ``ready`` classes had work."""
        candidates = set(self._ready(ready)) | {chosen}
        if chosen not in self._credit:
            raise ValueError(f"unknown priority {chosen!r}")
        for name in candidates:
            self._credit[name] += self.weights[name]
        self._credit[chosen] -= sum(self.weights[name] for name in candidates)

    def _ready(self, ready: Iterable[str]) -> list[str]:
        wanted = set(ready)
        unknown = wanted - set(PRIORITY_NAMES)
        if unknown:
            raise ValueError(f"unknown priorities {sorted(unknown)}")
        return [name for name in PRIORITY_NAMES if name in wanted]


def start_order(
    depths: Mapping[str, int], weights: Mapping[str, int] = DEFAULT_WEIGHTS
) -> list[str]:
    """The classes of a backlog in the order one slot starts them, by the policy."""
    left = {name: depths.get(name, 0) for name in PRIORITY_NAMES}
    policy = WeightedPriority(weights)
    order: list[str] = []
    while (choice := policy.choose(n for n, d in left.items() if d > 0)) is not None:
        policy.started(choice, [n for n, d in left.items() if d > 0])
        left[choice] -= 1
        order.append(choice)
    return order


def estimate_starts_before(
    depths: Mapping[str, int],
    priority: str,
    rank: int,
    weights: Mapping[str, int] = DEFAULT_WEIGHTS,
) -> int:
    """How many starts come before the job at 0-based ``rank`` within its class ``priority``.

    ``depths`` are the queued counts per class. Computed in closed form, phase by phase (a phase
    ends when a class runs dry), so it costs the same for a queue of ten or of a million; it
    agrees with :func:`start_order` to within two starts, which is plenty for an estimate.
    """
    weights = _check_weights(weights)
    if priority not in _RANK or rank < 0:
        raise ValueError("priority must be a class name and rank non-negative")
    left = {n: float(depths.get(n, 0)) for n in PRIORITY_NAMES if n != priority}
    need, elapsed = rank + 0.5, 0.0
    while True:
        ready = [n for n, d in left.items() if d > 0]
        total = weights[priority] + sum(weights[n] for n in ready)
        finish = need * total / weights[priority]
        drain = {n: left[n] * total / weights[n] for n in ready}
        first = min(drain, key=drain.__getitem__, default=None)
        if first is None or drain[first] >= finish:
            return max(0, math.floor(elapsed + finish))
        step = drain[first]
        elapsed += step
        need -= step * weights[priority] / total
        for name in ready:
            left[name] -= step * weights[name] / total
        left[first] = 0.0
