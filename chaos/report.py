"""Write docs/reliability.md from a campaign's outcome, and its figures as JSON.

The file is generated down to a marker line; whatever follows the marker (analysis of the
findings, written by hand) is kept when the report is written again.
"""

from __future__ import annotations

import collections
import json
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from chaos.campaign import Outcome
from chaos.checker import CATEGORIES, Finding
from chaos.ledger import FaultRecord

__all__ = ["KEEP_MARKER", "RECOVERY_TARGET", "summary", "write_report"]

KEEP_MARKER = "<!-- scripts/chaos rewrites everything above this line and keeps what follows -->"
# Seconds from a restart that keeps its identity to the first evaluation done again.
RECOVERY_TARGET = 5.0
_FINDINGS_SHOWN = 12
# Status codes the client library retries by itself (RESOURCE_EXHAUSTED only with RetryInfo).
_RETRIED = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"})
_DEFAULT_NOTES = """
## Notes kept between runs

Analysis written by hand goes here; `scripts/chaos` keeps this part.
"""
_LABELS = {
    "lost": "lost (accepted, then missing or never terminal)",
    "duplicated": "duplicated (created or run more than once)",
    "phantom": "phantom (terminal, but nobody submitted it)",
    "wrong": "wrong output or outcome",
    "error": "ERROR (the platform gave up)",
    "stuck": "stuck (not terminal within the deadline)",
    "unaccepted": "never accepted (every retry refused)",
    "orphans": "orphan processes on the host",
}


def write_report(
    path: Path, outcome: Outcome, machine: Sequence[tuple[str, str]], command: str
) -> None:
    """Write the Markdown report to ``path``."""
    kept = _kept_part(path)
    parts = [
        _header(outcome, command),
        _verdict(outcome),
        _recovery(outcome),
        _each_fault(outcome),
        _findings(outcome),
        _campaign(outcome, machine),
        _reproduce(),
        KEEP_MARKER + "\n" + kept,
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts))


def summary(outcome: Outcome) -> dict[str, Any]:
    """The campaign's figures as plain data (``--json``)."""
    return {
        "clean": outcome.verdict.clean,
        "counts": outcome.verdict.counts(),
        "control": {
            "passed": outcome.control.passed,
            "deleted": outcome.control.deleted_rid,
            "dropped": outcome.control.dropped_rid,
            "lost": outcome.control.lost,
            "phantom": outcome.control.phantom,
            "why": outcome.control.why,
        },
        "submitted": outcome.verdict.submitted,
        "accepted": outcome.verdict.accepted,
        "succeeded": outcome.verdict.succeeded,
        "retried": outcome.verdict.retried,
        "host_runs": outcome.verdict.host_runs,
        "faults": [
            {
                "name": f.name,
                "cycle": f.cycle,
                "serving_after": f.serving_after,
                "recovered_after": f.recovered_after,
                "probe_accepted_after": f.probe_accepted_after,
                "probe_started_after": f.probe_started_after,
                "probe_answers": _probe_answers(outcome, f),
                "notes": f.notes,
            }
            for f in outcome.ledger.faults
        ],
        "findings": [_finding(outcome, f) for f in outcome.verdict.findings],
        "unexpected_exits": outcome.ledger.unexpected_exits,
        "notes": outcome.notes,
        "seconds": round(outcome.seconds, 1),
    }


def _finding(outcome: Outcome, finding: Finding) -> dict[str, Any]:
    """A finding with what the ledger knows of its request."""
    found: dict[str, Any] = dict(vars(finding))
    sub = outcome.ledger.submissions.get(finding.rid)
    if sub is not None:
        found["request"] = {
            "kind": sub.kind,
            "first_sent": sub.first_sent,
            "accepted_at": sub.accepted_at,
            "tries": sub.tries,
            "errors": sub.errors,
            "watched_state": sub.watched_state,
            "attempts_seen": sorted(sub.live_stdout),
            "faults": [
                f"{f.name} at {f.injected_at:.3f}, healed at {f.healed_at:.3f}"
                for f in outcome.ledger.faults
                if f.window[1] >= sub.first_sent - 1.0
            ][:3],
        }
    return found


def _probe_answers(outcome: Outcome, fault: FaultRecord) -> list[str]:
    """The probe's failed submit answers, each with its time from the fault."""
    sub = outcome.ledger.submissions.get(fault.probe_rid)
    if sub is None:
        return []
    return [f"+{at - fault.injected_at:.2f} s {answer}" for at, answer in sub.errors]


def write_json(path: Path, outcome: Outcome) -> None:
    """Write ``summary(outcome)`` to ``path``."""
    path.write_text(json.dumps(summary(outcome), indent=1, sort_keys=True) + "\n")


def _kept_part(path: Path) -> str:
    if path.is_file():
        text = path.read_text()
        if KEEP_MARKER in text:
            return text.split(KEEP_MARKER, 1)[1].lstrip("\n")
    return _DEFAULT_NOTES.lstrip("\n")


def _header(outcome: Outcome, command: str) -> str:
    plan = outcome.plan
    return (
        "# Reliability\n\n"
        f"Written by `{command}` in {outcome.seconds / 60:.1f} minutes: {plan.cycles} "
        f"cycle(s) of {len(plan.faults)} faults under a steady load of {plan.rate:g} "
        "evaluations a second, against a local mesh started and supervised as `evalmesh up` "
        "does. How the campaign works and what each count means: "
        "[chaos/README.md](../chaos/README.md).\n"
    )


def _verdict(outcome: Outcome) -> str:
    verdict, control = outcome.verdict, outcome.control
    counts = verdict.counts()
    rows = [f"| {_LABELS[c]} | {counts[c]} |" for c in CATEGORIES]
    kinds = collections.Counter(s.kind for s in outcome.ledger.submissions.values())
    made = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
    if control.passed:
        said = (
            f"passed: with evaluation `{control.deleted_rid}` deleted from the database behind "
            f"the platform's back and request `{control.dropped_rid}` left out of the ledger, "
            "the checker reported exactly one lost and one phantom more, those two, and "
            "nothing else."
        )
    else:
        said = f"**FAILED**: {control.why}"
    return (
        "\n## Verdict\n\n"
        f"{'Clean' if verdict.clean else '**Not clean**'}: "
        f"{verdict.submitted} evaluations submitted ({made}), {verdict.accepted} accepted, "
        f"{verdict.succeeded} SUCCEEDED with the right output; {verdict.retried} ran a second "
        f"attempt after a fault took their first; {verdict.host_runs} runs seen on the host, "
        f"for {verdict.sighted} evaluations.\n\n"
        "| check | count |\n|---|---|\n" + "\n".join(rows) + "\n\n"
        f"Negative control {said}\n"
    )


def _recovery(outcome: Outcome) -> str:
    by_name: dict[str, list[FaultRecord]] = collections.defaultdict(list)
    for fault in outcome.ledger.faults:
        by_name[fault.name].append(fault)
    rows = []
    for name, faults in by_name.items():
        recovered = [f.recovered_after for f in faults if f.recovered_after is not None]
        serving = [f.serving_after for f in faults if f.serving_after is not None]
        missing = len(faults) - len(recovered)
        target = f"< {RECOVERY_TARGET:g} s" if faults[0].keeps_identity else ""
        met = ""
        if target and recovered:
            met = " (met)" if max(recovered) < RECOVERY_TARGET and not missing else " (**missed**)"
        rows.append(
            f"| {name} | {_origin(faults[0])} | {len(faults)} | {_fmt(max(serving, default=None))} "
            f"| {_fmt(_median(recovered))} / {_fmt(max(recovered, default=None))}"
            f"{f' ({missing} never)' if missing else ''} | {target}{met} "
            f"| {_bursts(outcome, faults)} | {_interrupted(outcome, faults)} |"
        )
    floor = _median(outcome.baseline)
    return (
        "\n## Time to recover\n\n"
        "Seconds from the fault (a kill) or its healing (a resume, a freed disk, a restored "
        "link) to the component reporting SERVING again, and to the first evaluation submitted "
        "after it completing (its end time in the database). Without any fault, such an "
        f"evaluation takes {_fmt(floor)} s from submit to end (median of "
        f"{len(outcome.baseline)}): the floor under every figure.\n\n"
        "| fault | timed from | cycles | SERVING after (max) | first evaluation done "
        "after (median / max) | target | submits fired just before: retried, same "
        "evaluation | runs under way when it hit |\n"
        "|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


def _origin(fault: FaultRecord) -> str:
    return {
        "executor-pause": "SIGCONT",
        "disk-full": "disk freed",
        "nats-link-cut": "link restored",
    }.get(fault.name, "kill -9")


def _bursts(outcome: Outcome, faults: Iterable[FaultRecord]) -> str:
    subs = outcome.ledger.submissions
    rids = [rid for fault in faults for rid in fault.burst_rids]
    retried = sum(1 for rid in rids if subs[rid].tries > 1)
    same = sum(1 for rid in rids if len(subs[rid].evaluation_ids) == 1)
    return f"{len(rids)}: {retried} retried, {same} same"


def _interrupted(outcome: Outcome, faults: Iterable[FaultRecord]) -> str:
    """Runs under way when the fault hit: how many ran again (a later attempt), how long after
    the healing the last attempt started, and how many stored the last attempt's result (an
    older attempt's stored instead is counted as a wrong output)."""
    wrong = outcome.verdict.of("wrong")
    stale = {f.evaluation_id for f in wrong if "late result of an older attempt" in f.detail}
    total, again, kept, waits = 0, 0, 0, []
    for fault in faults:
        for evaluation_id in fault.interrupted:
            total += 1
            evaluation = outcome.stored.get(evaluation_id)
            if evaluation is None or evaluation.attempt < 2:
                continue
            again += 1
            kept += evaluation_id not in stale
            if evaluation.start_time is not None:
                waits.append(evaluation.start_time - fault.window[1])
    if not total:
        return ""
    wait = (
        f" (the last attempt started {_fmt(max(waits))} s after the healing at most)"
        if waits
        else ""
    )
    return f"{total}: {again} ran again{wait}, {kept} kept the last result"


def _each_fault(outcome: Outcome) -> str:
    rows = []
    for fault in outcome.ledger.faults:
        answers = _answers_during(outcome, fault)
        notes = "; ".join(fault.notes)
        probe = f"{_fmt(fault.probe_accepted_after)} / {_fmt(fault.probe_started_after)}"
        rows.append(
            f"| {fault.cycle} | {fault.name} | {_fmt(fault.serving_after)} | {probe} "
            f"| {_fmt(fault.recovered_after)} | {answers} | {notes} |"
        )
    return (
        "\n## Each fault\n\n"
        "The probe is the first evaluation submitted after the fault (HIGH priority, so that "
        "the backlog the fault left does not count): when a submit of it was first answered "
        "OK, when an executor started it and when it ended, from the same origin as above. "
        "Failed submit answers are those of every request between the fault and the probe's "
        "end; each was retried with its request_id until accepted.\n\n"
        "| cycle | fault | SERVING after | probe accepted / started after | probe done after "
        "| failed submit answers meanwhile | notes |\n|---|---|---|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n"
    )


def _answer_counts(outcome: Outcome, fault: FaultRecord) -> collections.Counter[str]:
    """Failed submit answers between the fault and its probe's end (plus a second)."""
    origin = fault.injected_at
    end = max(fault.healed_at, origin) + (fault.recovered_after or 0.0) + 1.0
    counts: collections.Counter[str] = collections.Counter()
    for sub in outcome.ledger.submissions.values():
        counts.update(code for at, code in sub.errors if origin - 0.1 <= at <= end)
    return counts


def _answers_during(outcome: Outcome, fault: FaultRecord) -> str:
    counts = _answer_counts(outcome, fault)
    return ", ".join(f"{code} x{n}" for code, n in counts.most_common()) or "none"


def _given_up_answers(outcome: Outcome) -> list[str]:
    """Per fault, the failed submit answers that the client library does not retry: a client
    following its policy would have given up on a request the platform accepts moments later."""
    lines = []
    for name in dict.fromkeys(f.name for f in outcome.ledger.faults):
        faults = [f for f in outcome.ledger.faults if f.name == name]
        counts: collections.Counter[str] = collections.Counter()
        for fault in faults:
            for answer, n in _answer_counts(outcome, fault).items():
                if answer.split()[0] not in _RETRIED:
                    counts[answer] += n
        if counts:
            said = ", ".join(f"{answer} x{n}" for answer, n in counts.most_common())
            lines.append(f"- {name}: submits answered {said}")
    return lines


def _findings(outcome: Outcome) -> str:
    lines = ["\n## Findings\n"]
    findings = outcome.verdict.findings
    given_up = _given_up_answers(outcome)
    if not (findings or outcome.ledger.unexpected_exits or outcome.notes or given_up):
        return "\n## Findings\n\nNone.\n"
    for category in CATEGORIES:
        found = outcome.verdict.of(category)
        if not found:
            continue
        lines.append(f"**{_LABELS[category]}**: {len(found)}\n")
        for finding in found[:_FINDINGS_SHOWN]:
            who = finding.rid or finding.evaluation_id
            lines.append(f"- `{who}`: {finding.detail}")
        if len(found) > _FINDINGS_SHOWN:
            lines.append(f"- ... and {len(found) - _FINDINGS_SHOWN} more")
        lines.append("")
    if outcome.ledger.unexpected_exits:
        lines.append("**Component exits the campaign did not cause**\n")
        lines += [f"- {line}" for line in outcome.ledger.unexpected_exits] + [""]
    if given_up:
        lines.append(
            "**Answers the client library does not retry** (no request was lost: "
            "the campaign retried them all)\n"
        )
        lines += [*given_up, ""]
    if outcome.notes:
        lines.append("**Notes**\n")
        lines += [f"- {note}" for note in outcome.notes] + [""]
    return "\n".join(lines)


def _campaign(outcome: Outcome, machine: Sequence[tuple[str, str]]) -> str:
    plan = outcome.plan
    settings = ", ".join(
        f"`{k}={v}`" for k, v in plan.mesh_env().items() if k != "EVALMESH_SANDBOX_BACKEND"
    )
    rows = "\n".join(f"| {what} | {value} |" for what, value in machine)
    return (
        "\n## Campaign\n\n"
        f"- Mesh: NATS, storage on SQLite ({outcome.disk}), scheduler, one executor-pool "
        f"({plan.executor_slots} slots, bwrap) reaching NATS through the campaign's proxy, "
        "gateway and Envoy, each restarted by the launcher's supervisor when it exits.\n"
        f"- Settings that differ from the launcher's defaults: {settings}.\n"
        f"- Load: {plan.rate:g} evaluations a second, each sleeping "
        f"{plan.seconds[0]:g}-{plan.seconds[1]:g} s; {plan.burst} more fired 0-30 ms before "
        f"each fault, after {plan.gap:g} s of steady load. The executor is paused for "
        f"{plan.pause_for:g} s, the disk full for {plan.disk_full_for:g} s, the link cut for "
        f"{plan.cut_for:g} s. Stuck means not ended {plan.stuck_after:g} s after its submit "
        "or the healing of the last fault it lived through.\n\n"
        "|  |  |\n|---|---|\n" + rows + "\n"
    )


def _reproduce() -> str:
    return (
        "\n## Reproduce\n\n"
        "```\n"
        "scripts/chaos                       # the full campaign (as above)\n"
        "scripts/chaos --quick               # one cycle, shorter holds (what CI runs)\n"
        "scripts/chaos --faults storage,disk-full --cycles 2\n"
        "```\n"
    )


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
