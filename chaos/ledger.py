"""What the campaign did and saw, kept outside the platform: the checker's evidence.

Times are wall-clock seconds (``time.time()``), comparable with the database's timestamps on
the same host.
"""

from __future__ import annotations

import collections
import dataclasses

__all__ = [
    "FaultRecord",
    "Ledger",
    "RunSighting",
    "StoredEvaluation",
    "Submission",
]


@dataclasses.dataclass
class Submission:
    """One evaluation the campaign asked for, from its first submit to its terminal state.

    ``kind`` is ``load`` (the steady load), ``burst`` (fired just before a fault), ``probe``
    (the first evaluation after a fault, which times recovery) or ``warmup``.
    """

    rid: str
    tag: str
    kind: str
    code: str
    rounds: int
    first_sent: float
    priority: str = "NORMAL"
    # When a submit was first answered OK (None: never accepted), and every id any answer
    # carried: a retry with the same request_id must return the same evaluation.
    accepted_at: float | None = None
    evaluation_ids: set[str] = dataclasses.field(default_factory=set)
    tries: int = 0
    # (when, gRPC status name and reason) of each failed submit try, in order.
    errors: list[tuple[float, str]] = dataclasses.field(default_factory=list)
    # What its watch saw: the live stdout of each attempt, and the first terminal snapshot.
    live_stdout: dict[int, bytearray] = dataclasses.field(default_factory=dict)
    watched_terminal_at: float | None = None
    watched_state: str = ""

    @property
    def evaluation_id(self) -> str:
        """The evaluation this request created (one, unless the platform duplicated it)."""
        return min(self.evaluation_ids) if self.evaluation_ids else ""


@dataclasses.dataclass(frozen=True)
class StoredEvaluation:
    """An evaluation as the public API returns it at the end of the campaign."""

    id: str
    request_id: str
    state: str
    attempt: int
    code: str
    stdout: bytes
    stderr: bytes
    exit_code: int | None
    detail: str
    create_time: float
    start_time: float | None
    end_time: float | None


@dataclasses.dataclass
class RunSighting:
    """One process on the host that carried an evaluation's tag: one run of its program."""

    tag: str
    pid: int
    first_seen: float
    last_seen: float
    # When it was first seen gone or a zombie (None: still alive at the last look).
    gone_at: float | None = None


@dataclasses.dataclass
class FaultRecord:
    """One fault injected: when it hit, when it healed, how fast the mesh came back."""

    name: str
    cycle: int
    # Restarts that keep the component's identity (same port, store, instance id) are held
    # to the recovery target.
    keeps_identity: bool
    injected_at: float
    healed_at: float = 0.0
    # Seconds from the fault to the component SERVING again (with what depends on it), and
    # to the first evaluation submitted after it completing. None: not within the deadline.
    serving_after: float | None = None
    recovered_after: float | None = None
    # The probe's way back, from the same origin: accepted (submit answered OK), started
    # (claimed by an executor, database clock).
    probe_accepted_after: float | None = None
    probe_started_after: float | None = None
    probe_rid: str = ""
    burst_rids: list[str] = dataclasses.field(default_factory=list)
    # Evaluations running on the affected executor when the fault hit (their ids).
    interrupted: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def window(self) -> tuple[float, float]:
        """From the fault to its healing (the restart, the resume, the freed disk)."""
        return self.injected_at, max(self.healed_at, self.injected_at)


@dataclasses.dataclass
class Ledger:
    """Everything the campaign recorded."""

    submissions: dict[str, Submission] = dataclasses.field(default_factory=dict)
    faults: list[FaultRecord] = dataclasses.field(default_factory=list)
    sightings: list[RunSighting] = dataclasses.field(default_factory=list)
    # Processes of the mesh's sandboxes that were re-parented to the campaign (a child
    # subreaper) and still lived a while later: pid -> a description.
    orphans: dict[int, str] = dataclasses.field(default_factory=dict)
    # Component exits the campaign did not cause, as the supervisor reported them.
    unexpected_exits: list[str] = dataclasses.field(default_factory=list)

    def by_tag(self) -> dict[str, Submission]:
        """Submissions keyed by their host tag."""
        return {s.tag: s for s in self.submissions.values()}

    def sightings_by_tag(self) -> dict[str, list[RunSighting]]:
        """Host runs grouped by tag."""
        grouped: dict[str, list[RunSighting]] = collections.defaultdict(list)
        for sighting in self.sightings:
            grouped[sighting.tag].append(sighting)
        return dict(grouped)
