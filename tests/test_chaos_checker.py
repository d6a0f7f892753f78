"""The chaos checker on hand-made evidence: each kind of damage is seen, and only that one."""

from __future__ import annotations

import dataclasses

import pytest

from chaos.checker import CATEGORIES, check
from chaos.ledger import FaultRecord, Ledger, RunSighting, StoredEvaluation, Submission
from chaos.program import expected_digest, parse_output, program

ROUNDS = 3
T0 = 1_700_000_000.0


def _output(rid: str, nonce: str = "0123456789ab", started: float | None = None) -> bytes:
    """What a run of ``rid`` prints; it began at ``started`` (default: just after its claim)."""
    digest = expected_digest(rid, ROUNDS)
    began = round((started or T0 + int(rid.rsplit("-", 1)[1]) + 0.12) * 1000)
    return f"begin {rid} {nonce} {began}\nend {rid} {nonce} {digest}\n".encode()


def _campaign(count: int = 3) -> tuple[Ledger, dict[str, StoredEvaluation]]:
    """``count`` evaluations that each ran once, right, in time; one host run each."""
    ledger = Ledger()
    stored = {}
    for i in range(count):
        rid, tag, evaluation_id = f"rid-{i}", f"cxtest{i:05d}", f"ev-{i}"
        sub = Submission(rid, tag, "load", program(rid, tag, 0.2, ROUNDS), ROUNDS, T0 + i)
        sub.accepted_at = T0 + i + 0.01
        sub.evaluation_ids.add(evaluation_id)
        sub.live_stdout[1] = bytearray(_output(rid))
        sub.watched_state = "SUCCEEDED"
        ledger.submissions[rid] = sub
        stored[evaluation_id] = StoredEvaluation(
            id=evaluation_id,
            request_id=rid,
            state="SUCCEEDED",
            attempt=1,
            code=sub.code,
            stdout=_output(rid),
            stderr=b"",
            exit_code=0,
            detail="",
            create_time=T0 + i,
            start_time=T0 + i + 0.1,
            end_time=T0 + i + 0.5,
        )
        ledger.sightings.append(
            RunSighting(tag, 100 + i, T0 + i + 0.15, T0 + i + 0.4, T0 + i + 0.45)
        )
    return ledger, stored


def _only(verdict_counts: dict[str, int], **expected: int) -> None:
    assert verdict_counts == {category: expected.get(category, 0) for category in CATEGORIES}


def _replace(stored: dict[str, StoredEvaluation], evaluation_id: str, **changes: object) -> None:
    stored[evaluation_id] = dataclasses.replace(stored[evaluation_id], **changes)  # type: ignore[arg-type]


def _second_attempt(ledger: Ledger, stored: dict[str, StoredEvaluation], i: int) -> None:
    """Evaluation ``i`` ran twice: attempt 1 printed another nonce, attempt 2 was stored."""
    rid = f"rid-{i}"
    _replace(stored, f"ev-{i}", attempt=2)
    live = ledger.submissions[rid].live_stdout
    live[1], live[2] = bytearray(_output(rid, "ffffffffffff")[:30]), live[1]


def test_a_campaign_where_everything_went_right_is_clean() -> None:
    ledger, stored = _campaign()
    verdict = check(ledger, stored, stuck_after=30)
    _only(verdict.counts())
    assert verdict.clean
    assert (verdict.accepted, verdict.succeeded, verdict.host_runs, verdict.sighted) == (3, 3, 3, 3)


def test_an_evaluation_deleted_from_storage_is_lost_and_nothing_else() -> None:
    ledger, stored = _campaign()
    del stored["ev-1"]
    verdict = check(ledger, stored, stuck_after=30)
    _only(verdict.counts(), lost=1)
    assert [f.rid for f in verdict.of("lost")] == ["rid-1"]
    assert not verdict.clean


def test_an_evaluation_never_terminal_is_lost() -> None:
    ledger, stored = _campaign()
    _replace(stored, "ev-2", state="QUEUED", end_time=None)
    verdict = check(ledger, stored, stuck_after=30)
    _only(verdict.counts(), lost=1)
    assert "still QUEUED" in verdict.of("lost")[0].detail


def test_a_request_missing_from_the_ledger_is_a_phantom() -> None:
    ledger, stored = _campaign()
    del ledger.submissions["rid-0"]
    verdict = check(ledger, stored, stuck_after=30)
    _only(verdict.counts(), phantom=1)
    assert verdict.of("phantom")[0].evaluation_id == "ev-0"


def test_one_request_with_two_evaluations_is_duplicated() -> None:
    ledger, stored = _campaign()
    ledger.submissions["rid-0"].evaluation_ids.add("ev-0b")
    verdict = check(ledger, stored, stuck_after=30)
    _only(verdict.counts(), duplicated=1)


def test_more_host_runs_than_attempts_is_a_duplicate_run() -> None:
    ledger, stored = _campaign()
    ledger.sightings.append(RunSighting("cxtest00001", 999, T0 + 1.16, T0 + 1.3, T0 + 1.35))
    verdict = check(ledger, stored, stuck_after=30)
    _only(verdict.counts(), duplicated=1)
    details = " ".join(f.detail for f in verdict.of("duplicated"))
    assert "2 runs on the host for 1 attempt" in details
    assert "two runs alive at once" in details


def test_a_run_after_the_result_is_a_duplicate_run() -> None:
    ledger, stored = _campaign()
    _second_attempt(ledger, stored, 0)
    ledger.faults.append(FaultRecord("executor-pool", 1, True, T0 - 5, T0 - 4))
    ledger.submissions["rid-0"].first_sent = T0 - 6
    ledger.sightings.append(RunSighting("cxtest00000", 998, T0 + 3, T0 + 3.2, T0 + 3.3))
    verdict = check(ledger, stored, stuck_after=30)
    # Alive seconds after its evaluation ended, that run is an orphan too.
    _only(verdict.counts(), duplicated=1, orphans=1)
    assert "ran again 2.5 s after its result" in verdict.of("duplicated")[0].detail


def test_a_second_attempt_without_any_fault_is_a_duplicate_run() -> None:
    ledger, stored = _campaign()
    _second_attempt(ledger, stored, 1)
    verdict = check(ledger, stored, stuck_after=30)
    _only(verdict.counts(), duplicated=1)
    assert "no fault" in verdict.of("duplicated")[0].detail


def test_a_second_attempt_after_a_fault_is_retried_not_duplicated() -> None:
    ledger, stored = _campaign()
    _second_attempt(ledger, stored, 1)
    ledger.faults.append(FaultRecord("executor-pool", 1, True, T0 + 1.2, T0 + 1.3))
    verdict = check(ledger, stored, stuck_after=30)
    _only(verdict.counts())
    assert verdict.retried == 1


@pytest.mark.parametrize(
    ("stdout", "stderr", "problem"),
    [
        (
            _output("rid-1").replace(b"end rid-1 0123456789ab", b"end rid-1 ba9876543210"),
            b"",
            "two different runs",
        ),
        (_output("rid-1")[:-1] + b"x\n", b"", "malformed"),
        (_output("rid-1").replace(b" 1700000001120", b" 170000000112"), b"", "malformed"),
        (_output("rid-2").replace(b"rid-2", b"rid-1", 1), b"", "another request"),
        (_output("rid-1") + b"extra\n", b"", "not 2 lines"),
        (_output("rid-1"), b"Traceback", "stderr"),
    ],
)
def test_output_that_is_not_one_whole_run_of_its_own_program_is_wrong(
    stdout: bytes, stderr: bytes, problem: str
) -> None:
    ledger, stored = _campaign()
    _replace(stored, "ev-1", stdout=stdout, stderr=stderr)
    verdict = check(ledger, stored, stuck_after=30)
    _only(verdict.counts(), wrong=1)
    assert problem in " ".join(f.detail for f in verdict.of("wrong"))


def test_a_wrong_digest_is_wrong() -> None:
    rid = "rid-0"
    good = _output(rid)
    bad = good.replace(expected_digest(rid, ROUNDS).encode(), b"0" * 64)
    assert parse_output(good, rid, ROUNDS).ok
    assert parse_output(bad, rid, ROUNDS).problem == "wrong digest"


def test_a_result_of_an_older_attempt_is_wrong() -> None:
    ledger, stored = _campaign()
    # Attempt 1 began at T0 - 3, was paused past its lease, and its late result was stored
    # over attempt 2 (claimed at T0 + 0.1).
    _second_attempt(ledger, stored, 0)
    _replace(stored, "ev-0", stdout=_output("rid-0", started=T0 - 3))
    ledger.submissions["rid-0"].first_sent = T0 - 4
    ledger.faults.append(FaultRecord("executor-pause", 1, False, T0 - 2, T0))
    verdict = check(ledger, stored, stuck_after=30)
    _only(verdict.counts(), wrong=1)
    assert "began 3.10 s before attempt 2 was claimed" in verdict.of("wrong")[0].detail


def test_other_terminal_states_and_changed_results_are_wrong_and_error_is_counted() -> None:
    ledger, stored = _campaign()
    _replace(stored, "ev-0", state="FAILED", exit_code=1)
    _replace(stored, "ev-1", state="ERROR", detail="attempts exhausted")
    ledger.submissions["rid-2"].watched_state = "CANCELLED"
    verdict = check(ledger, stored, stuck_after=30)
    _only(verdict.counts(), wrong=2, error=1)
    assert verdict.of("error")[0].detail == "attempts exhausted"
    assert not check(*_campaign(), stuck_after=30).of("error")


def test_an_evaluation_that_ends_too_late_after_the_last_fault_is_stuck() -> None:
    ledger, stored = _campaign()
    _replace(stored, "ev-0", end_time=T0 + 20)
    _replace(stored, "ev-1", end_time=T0 + 40)
    # ev-1 lived through a fault that healed at T0 + 35: ending 5 s after it is in time.
    ledger.faults.append(FaultRecord("storage", 1, True, T0 + 25, T0 + 35))
    ledger.sightings = []
    verdict = check(ledger, stored, stuck_after=10)
    _only(verdict.counts(), stuck=1)
    assert verdict.of("stuck")[0].rid == "rid-0"


def test_a_request_never_accepted_is_counted() -> None:
    ledger, stored = _campaign()
    sub = ledger.submissions["rid-2"]
    sub.accepted_at, sub.evaluation_ids = None, set()
    sub.errors = [(T0, "INTERNAL")] * 3
    del stored["ev-2"]
    verdict = check(ledger, stored, stuck_after=30)
    _only(verdict.counts(), unaccepted=1)


def test_a_run_alive_after_its_evaluation_ended_and_a_reparented_process_are_orphans() -> None:
    ledger, stored = _campaign()
    ledger.sightings[0].gone_at = None
    ledger.orphans[4242] = "python3 (pid 4242), alive 2.0 s after re-parenting"
    verdict = check(ledger, stored, stuck_after=30)
    _only(verdict.counts(), orphans=2)
