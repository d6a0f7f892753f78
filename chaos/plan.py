"""How big a campaign is, and the settings the mesh runs with."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

__all__ = ["FAULTS", "FULL", "QUICK", "Plan"]

# The faults, in the order a cycle injects them.
FAULTS = (
    "storage",
    "scheduler",
    "executor-pool",
    "gateway",
    "nats-server",
    "executor-pause",
    "disk-full",
    "nats-link-cut",
)


@dataclasses.dataclass(frozen=True)
class Plan:
    """The campaign's size and timings (seconds unless named otherwise)."""

    cycles: int
    # Steady load: evaluations per second, each sleeping a random time in ``seconds`` and
    # hashing its request id ``rounds`` times.
    rate: float = 2.0
    seconds: tuple[float, float] = (0.2, 1.0)
    rounds: int = 20_000
    # Submits fired 0-30 ms before each fault.
    burst: int = 4
    # Steady load before each fault, so that runs are under way when it hits.
    gap: float = 3.0
    # The executor's claim lease (the launcher's default is 30 s; shorter, so that pausing
    # an executor past its lease takes seconds), and the scheduler's reaper period.
    lease: float = 8.0
    reap_interval: float = 5.0
    # How long the disk stays full and the executor's NATS link stays cut.
    disk_full_for: float = 4.0
    cut_for: float = 8.0
    # An evaluation is stuck if it ends later than this after its submit or after the last
    # fault that touched it healed: the longest program, the lease, a reaper pass, the
    # requeue backoff, and room for the backlog a fault leaves.
    stuck_after: float = 30.0
    # How long to wait for everything to end after the last fault, and for a fault's probe.
    settle: float = 120.0
    recover_within: float = 60.0
    executor_slots: int = 3
    faults: tuple[str, ...] = FAULTS

    @property
    def pause_for(self) -> float:
        """How long the executor stays stopped: past its lease and the reaper's next pass."""
        return self.lease + self.reap_interval + 2.0

    def mesh_env(self) -> Mapping[str, str]:
        """Environment for every service: the launcher's defaults but for these."""
        return {
            "EVALMESH_SANDBOX_BACKEND": "bwrap",
            "EVALMESH_EXECUTOR_SLOTS": str(self.executor_slots),
            "EVALMESH_EXECUTOR_LEASE": f"{self.lease:g}s",
            "EVALMESH_REAP_INTERVAL": f"{self.reap_interval:g}s",
            # The campaign measures faults, not the abuse protections.
            "EVALMESH_TENANT_RATE": "1000000",
            "EVALMESH_TENANT_BURST": "1000000",
            "EVALMESH_TENANT_MAX_QUEUED": "0",
            "EVALMESH_TENANT_MAX_WATCHES": "100000",
        }


QUICK = Plan(cycles=1, gap=2.0, disk_full_for=3.0, cut_for=6.0)
FULL = Plan(cycles=3)
