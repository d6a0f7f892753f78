"""The scenarios, in the order a full run takes them; each is selectable by its NAME."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

from benchmarks.context import Context
from benchmarks.results import ScenarioResult
from benchmarks.scenarios import burst, dbsize, docker, latency, submit, throughput, watch

__all__ = ["SCENARIOS", "Scenario"]

Scenario = Callable[[Context], ScenarioResult]

_MODULES: tuple[ModuleType, ...] = (throughput, latency, submit, dbsize, burst, watch, docker)

SCENARIOS: dict[str, tuple[str, Scenario]] = {
    module.NAME: (module.TITLE, module.run) for module in _MODULES
}
