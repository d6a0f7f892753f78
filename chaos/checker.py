"""The checker: what the campaign asked for against what the platform holds and what ran.

Three independent sources, so that no single one can hide a fault:

- the ledger, kept by the campaign: every request it sent, every answer, what each watch saw;
- storage, read through the public API once everything has settled: the record of each
  evaluation, its attempt count and its output;
- the host: every process that carried an evaluation's tag (one per run of its program), and
  every sandbox process re-parented to the campaign.

Categories (an evaluation may be counted in several):

- **lost**: accepted (a submit answered OK) but missing from storage, or not terminal at the end.
- **duplicated**: one request created two evaluations; or the program ran more often than the
  evaluation was claimed (host runs or distinct nonces in its output above its attempt count:
  a run without a claim of its own); or it ran again after its result was recorded; or two of
  its runs were alive at once; or it was re-run although no fault touched it. A re-run after a
  fault lost its attempt is the platform working, not a duplicate: it is counted as retried.
- **phantom**: an evaluation in the campaign's tenant that no request of the campaign created.
- **wrong**: a terminal state other than SUCCEEDED or ERROR; or output that is not exactly one
  whole run of its own program (request id, nonce, digest); stderr; code that changed; a
  result of a run that began before the last attempt was claimed (a late write of an older
  attempt that the fence should have refused); a terminal state that changed after a watcher
  saw it.
- **error**: ended ERROR (the platform gave up), with its reason.
- **stuck**: took longer than ``stuck_after`` seconds to end, counted from its submit or from
  the healing of the last fault that overlapped its life, whichever is later.
- **unaccepted**: a request the platform never accepted, however often it was retried.
- **orphans**: a sandbox process re-parented to the campaign and still alive; or a run still
  alive more than ``ORPHAN_GRACE`` seconds after its evaluation ended.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
from collections.abc import Iterable, Mapping

from chaos.ledger import FaultRecord, Ledger, RunSighting, StoredEvaluation, Submission
from chaos.program import begin_nonces, parse_output

__all__ = ["CATEGORIES", "ORPHAN_GRACE", "Finding", "Verdict", "check"]

CATEGORIES = (
    "lost",
    "duplicated",
    "phantom",
    "wrong",
    "error",
    "stuck",
    "unaccepted",
    "orphans",
)
# A run may outlive its evaluation's end by this much (sampling every 0.1 s, a loaded host).
ORPHAN_GRACE = 2.0
_TERMINAL = frozenset(
    {
        "SUCCEEDED",
        "FAILED",
        "TIMED_OUT",
        "MEMORY_LIMIT_EXCEEDED",
        "OUTPUT_LIMIT_EXCEEDED",
        "CANCELLED",
        "ERROR",
    }
)
# A run first seen this long after its evaluation's end ran again after the result.
_AFTER_END_SLACK = 0.5
# Sandbox and database read the same clock; this covers the rounding of the two stamps.
_CLOCK = 0.01


@dataclasses.dataclass(frozen=True)
class Finding:
    """One thing wrong, about one request or evaluation (or one host process)."""

    category: str
    rid: str
    evaluation_id: str
    detail: str


@dataclasses.dataclass
class Verdict:
    """The findings, and figures about what went right."""

    findings: list[Finding] = dataclasses.field(default_factory=list)
    submitted: int = 0
    accepted: int = 0
    succeeded: int = 0
    # Evaluations that ran more than one attempt (each explained by a fault).
    retried: int = 0
    # Runs seen on the host, and evaluations with at least one run seen.
    host_runs: int = 0
    sighted: int = 0

    def add(self, category: str, rid: str, evaluation_id: str, detail: str) -> None:
        """Record a finding."""
        self.findings.append(Finding(category, rid, evaluation_id, detail))

    def counts(self) -> dict[str, int]:
        """How many distinct requests (or processes) each category holds."""
        keys: dict[str, set[str]] = {category: set() for category in CATEGORIES}
        for finding in self.findings:
            keys[finding.category].add(finding.rid or finding.evaluation_id)
        return {category: len(found) for category, found in keys.items()}

    def annotate(self, evaluation_id: str, more: str) -> None:
        """Add ``more`` to the detail of every finding about ``evaluation_id``."""
        self.findings = [
            dataclasses.replace(f, detail=f"{f.detail}; {more}")
            if f.evaluation_id == evaluation_id
            else f
            for f in self.findings
        ]

    def of(self, category: str) -> list[Finding]:
        """The findings of one category."""
        return [finding for finding in self.findings if finding.category == category]

    @property
    def clean(self) -> bool:
        """True when nothing was lost, duplicated, phantom, wrong, stuck, unaccepted or
        orphaned (ERROR is reported but allowed: the platform may give up, saying why)."""
        counts = self.counts()
        return all(counts[c] == 0 for c in CATEGORIES if c != "error")


def check(ledger: Ledger, stored: Mapping[str, StoredEvaluation], *, stuck_after: float) -> Verdict:
    """Compare the ledger with storage and the host; see the module docstring for the rules."""
    verdict = Verdict(submitted=len(ledger.submissions))
    by_rid: dict[str, list[StoredEvaluation]] = collections.defaultdict(list)
    for evaluation in stored.values():
        by_rid[evaluation.request_id].append(evaluation)
    runs = ledger.sightings_by_tag()
    verdict.host_runs = sum(len(found) for found in runs.values())
    for sub in ledger.submissions.values():
        found = by_rid.get(sub.rid, [])
        sightings = runs.get(sub.tag, [])
        _check_submission(verdict, sub, found, stored, sightings, ledger.faults, stuck_after)
    for rid, evaluations in by_rid.items():
        if rid not in ledger.submissions:
            for evaluation in evaluations:
                verdict.add("phantom", "", evaluation.id, f"request_id {rid!r}: nobody sent it")
    for pid, description in sorted(ledger.orphans.items()):
        verdict.add("orphans", f"pid {pid}", "", description)
    return verdict


def _check_submission(
    verdict: Verdict,
    sub: Submission,
    found: list[StoredEvaluation],
    stored: Mapping[str, StoredEvaluation],
    sightings: list[RunSighting],
    faults: list[FaultRecord],
    stuck_after: float,
) -> None:
    ids = set(sub.evaluation_ids) | {evaluation.id for evaluation in found}
    if sub.accepted_at is None and not ids:
        answers = [answer for _, answer in sub.errors[-3:]]
        verdict.add("unaccepted", sub.rid, "", f"{sub.tries} tries, last answers {answers}")
        return
    if len(ids) > 1:
        verdict.add("duplicated", sub.rid, ",".join(sorted(ids)), "one request, many evaluations")
    if sub.accepted_at is not None:
        verdict.accepted += 1
    evaluation = stored.get(sub.evaluation_id) or (found[0] if found else None)
    if evaluation is None:
        verdict.add("lost", sub.rid, sub.evaluation_id, "accepted, not in storage")
        return
    if evaluation.state not in _TERMINAL:
        verdict.add("lost", sub.rid, evaluation.id, f"accepted, still {evaluation.state}")
        return
    if evaluation.attempt > 1:
        verdict.retried += 1
    if sightings:
        verdict.sighted += 1
    _check_outcome(verdict, sub, evaluation)
    _check_runs(verdict, sub, evaluation, sightings, faults)
    _check_time(verdict, sub, evaluation, faults, stuck_after)
    _check_orphans(verdict, sub, evaluation, sightings)


def _check_outcome(verdict: Verdict, sub: Submission, evaluation: StoredEvaluation) -> None:
    def wrong(detail: str) -> None:
        verdict.add("wrong", sub.rid, evaluation.id, detail)

    if evaluation.state == "ERROR":
        verdict.add("error", sub.rid, evaluation.id, evaluation.detail or "no reason given")
        return
    if sub.watched_state and sub.watched_state != evaluation.state:
        wrong(f"a watcher saw it end {sub.watched_state}, storage says {evaluation.state}")
    if evaluation.code != sub.code:
        wrong("stored code differs from the code submitted")
    if evaluation.state != "SUCCEEDED":
        tail = evaluation.stderr[-160:].decode(errors="replace").strip()
        wrong(f"{evaluation.state} (exit {evaluation.exit_code}) {evaluation.detail} {tail}")
        return
    verdict.succeeded += 1
    parsed = parse_output(evaluation.stdout, sub.rid, sub.rounds)
    if not parsed.ok:
        wrong(parsed.problem)
    if evaluation.stderr:
        wrong(f"stderr: {evaluation.stderr[:160]!r}")
    claimed = evaluation.start_time
    if parsed.started is not None and claimed is not None and parsed.started < claimed - _CLOCK:
        early = claimed - parsed.started
        wrong(
            f"stored result of a run that began {early:.2f} s before attempt "
            f"{evaluation.attempt} was claimed: a late result of an older attempt"
        )


def _check_runs(
    verdict: Verdict,
    sub: Submission,
    evaluation: StoredEvaluation,
    sightings: list[RunSighting],
    faults: Iterable[FaultRecord],
) -> None:
    def duplicated(detail: str) -> None:
        verdict.add("duplicated", sub.rid, evaluation.id, detail)

    nonces: set[str] = set()
    for live in sub.live_stdout.values():
        nonces |= begin_nonces(bytes(live), sub.rid)
    if len(sightings) > evaluation.attempt:
        duplicated(f"{len(sightings)} runs on the host for {evaluation.attempt} attempt(s)")
    if len(nonces) > evaluation.attempt:
        duplicated(f"{len(nonces)} runs in its live output for {evaluation.attempt} attempt(s)")
    if evaluation.end_time is not None:
        late = [s for s in sightings if s.first_seen > evaluation.end_time + _AFTER_END_SLACK]
        if late:
            after = late[0].first_seen - evaluation.end_time
            duplicated(f"ran again {after:.1f} s after its result (pid {late[0].pid})")
    ordered = sorted(sightings, key=lambda s: s.first_seen)
    for earlier, later in itertools.pairwise(ordered):
        if later.first_seen < (earlier.gone_at or earlier.last_seen):
            duplicated(f"two runs alive at once (pids {earlier.pid} and {later.pid})")
    if evaluation.attempt > 1 and not _touched(sub, evaluation, faults):
        duplicated(f"{evaluation.attempt} attempts, but no fault happened during its life")


def _touched(sub: Submission, evaluation: StoredEvaluation, faults: Iterable[FaultRecord]) -> bool:
    end = evaluation.end_time or float("inf")
    return any(f.injected_at <= end and f.window[1] >= sub.first_sent for f in faults)


def _check_time(
    verdict: Verdict,
    sub: Submission,
    evaluation: StoredEvaluation,
    faults: Iterable[FaultRecord],
    stuck_after: float,
) -> None:
    if evaluation.end_time is None:
        return
    since = sub.first_sent
    for fault in faults:
        start, healed = fault.window
        if start <= evaluation.end_time and healed >= sub.first_sent:
            since = max(since, healed)
    took = evaluation.end_time - since
    if took > stuck_after:
        detail = f"ended {took:.1f} s after {_since(sub, since)}"
        verdict.add("stuck", sub.rid, evaluation.id, detail)


def _since(sub: Submission, since: float) -> str:
    return "its submit" if since == sub.first_sent else "the last fault healed"


def _check_orphans(
    verdict: Verdict,
    sub: Submission,
    evaluation: StoredEvaluation,
    sightings: list[RunSighting],
) -> None:
    if evaluation.end_time is None:
        return
    for sighting in sightings:
        gone = sighting.gone_at
        if gone is None or gone > evaluation.end_time + ORPHAN_GRACE:
            alive = "still alive" if gone is None else f"alive {gone - evaluation.end_time:.1f} s"
            detail = f"run pid {sighting.pid} {alive} after the evaluation ended"
            verdict.add("orphans", sub.rid, evaluation.id, detail)
