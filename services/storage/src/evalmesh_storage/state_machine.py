"""The evaluation state machine. Every state change of an evaluation happens in this module.

    QUEUED -> RUNNING                claim: attempt + 1, executor, lease on the database clock,
                                     within the tenant's share when the executor names one
    RUNNING -> RUNNING               renew: same attempt only
    RUNNING -> terminal              complete: same attempt only; CANCELLED if a cancel was asked
    QUEUED -> CANCELLED              cancel, at once
    RUNNING -> RUNNING (cancel asked) cancel; the executor's completion then becomes CANCELLED
    RUNNING -> QUEUED                requeue: same attempt, lease expired (CANCELLED if asked)
    QUEUED -> ERROR                  complete with ERROR: the platform gives up (same attempt)
    terminal                         absorbing: nothing changes it

Each transition reads the row under a row lock (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite
writers hold the database write lock from ``BEGIN IMMEDIATE``), decides, and writes with a
compare-and-set ``UPDATE ... WHERE state = :seen AND attempt = :seen`` whose row count must be 1.
``attempt`` counts claims, so a lost executor's attempt number never holds the evaluation again:
after a requeue the row is QUEUED (its writes are refused), after the next claim it has moved on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, bindparam, delete, func, select, text, update

from evalmesh_storage.db import Tx
from evalmesh_storage.domain import (
    AppliedLimits,
    Evaluation,
    Fault,
    Result,
    RunTimings,
    State,
    TenantShare,
    TerminationCause,
    View,
)
from evalmesh_storage.errors import (
    Aborted,
    AlreadyClaimed,
    AlreadyTerminal,
    EvaluationNotFound,
    LeaseNotExpired,
    StaleAttempt,
    TenantAtLimit,
    invalid,
)
from evalmesh_storage.models import evaluations, output_chunks
from evalmesh_storage.rows import BASIC_COLUMNS, Row, evaluation_of
from evalmesh_storage.validation import check_text, clean_text, require

__all__ = [
    "MAX_LEASE_US",
    "Claim",
    "cancel",
    "claim",
    "complete",
    "lock_running",
    "renew",
    "requeue",
]

logger = logging.getLogger(__name__)

MAX_LEASE_US = 24 * 3600 * 1_000_000
# How many other tenants with QUEUED work a refused claim looks at for one below its fair share.
_WAITING_TENANTS_CHECKED = 1000
_ENDING_LIMIT = 1000  # an executor's runs being recorded at once: at most its slots
_E = evaluations.c
# The whole row (as a view reads it) under the row lock, so a transition can answer with the
# evaluation as it wrote it instead of reading it again.
_LOCK = {
    View.BASIC: select(*BASIC_COLUMNS).where(_E.id == bindparam("id")).with_for_update(),
    View.FULL: select(evaluations).where(_E.id == bindparam("id")).with_for_update(),
}
# SET takes the columns given with each execution; WHERE is the state and attempt last seen.
_COMPARE_AND_SET = update(evaluations).where(
    _E.id == bindparam("seen_id"),
    _E.state == bindparam("seen_state"),
    _E.attempt == bindparam("seen_attempt"),
)
_RUNNING_OF_TENANT = select(func.count()).where(
    _E.state == int(State.RUNNING), _E.tenant == bindparam("tenant")
)
_ENDING_OF_TENANT = select(func.count()).where(
    _E.id.in_(bindparam("ending", expanding=True)),
    _E.state == int(State.RUNNING),
    _E.tenant == bindparam("tenant"),
)
_TENANT_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(:tenant, 0))")
_DROP_OUTPUT = delete(output_chunks).where(output_chunks.c.evaluation_id == bindparam("id"))


@dataclass(frozen=True, slots=True)
class Claim:
    """An executor's claim on a QUEUED evaluation."""

    executor_id: str
    lease_us: int
    runtime_digest: str = ""
    applied_limits: AppliedLimits | None = None
    tenant_share: TenantShare | None = None


def _lock(tx: Tx, evaluation_id: str, view: View = View.BASIC) -> Row:
    row = tx.conn.execute(_LOCK[view], {"id": evaluation_id}).mappings().first()
    if row is None:
        raise EvaluationNotFound(
            f"evaluation {evaluation_id!r} not found", metadata={"evaluation": evaluation_id}
        )
    return row


def _compare_and_set(tx: Tx, seen: Row, **values: Any) -> Row:
    """Write ``values`` if the row is still as ``seen``; return the row as it is now."""
    fence = {"seen_id": seen["id"], "seen_state": seen["state"], "seen_attempt": seen["attempt"]}
    if tx.conn.execute(_COMPARE_AND_SET, {**fence, **values}).rowcount != 1:
        # Unreachable while the row lock holds; never report success for a write not made.
        raise Aborted("the evaluation changed concurrently; retry", reason="CONCURRENT_UPDATE")
    return {**seen, **values}


def _facts(row: Row) -> dict[str, str]:
    return {
        "evaluation": row["id"],
        "state": State(row["state"]).name,
        "attempt": str(row["attempt"]),
    }


def _refusal(row: Row, attempt: int) -> Exception:
    state = State(row["state"])
    if state.terminal and attempt == row["attempt"]:
        return AlreadyTerminal(
            f"evaluation {row['id']} is already {state.name}", metadata=_facts(row)
        )
    return StaleAttempt(
        f"attempt {attempt} no longer holds evaluation {row['id']} "
        f"(it is {state.name} at attempt {row['attempt']})",
        metadata=_facts(row),
    )


def lock_running(tx: Tx, evaluation_id: str, attempt: int) -> Row:
    """Lock the evaluation and check that ``attempt`` holds it RUNNING; else refuse."""
    row = _lock(tx, evaluation_id)
    if row["state"] != State.RUNNING or row["attempt"] != attempt:
        raise _refusal(row, attempt)
    return row


def _check_lease(lease_us: int) -> None:
    if not 0 < lease_us <= MAX_LEASE_US:
        raise invalid("lease_duration", "must be positive and at most 24 hours")


def claim(tx: Tx, evaluation_id: str, request: Claim) -> Evaluation:
    """QUEUED -> RUNNING for one executor; every other claimer is refused."""
    require("executor_id", request.executor_id, 256)
    check_text("runtime_digest", request.runtime_digest, 256)
    _check_lease(request.lease_us)
    share = request.tenant_share
    if share is not None:
        _check_share_request(share)
    row = _lock(tx, evaluation_id, View.FULL)
    state = State(row["state"])
    if state is State.RUNNING:
        raise AlreadyClaimed(f"evaluation {evaluation_id} is already running", metadata=_facts(row))
    if state.terminal:
        raise AlreadyTerminal(f"evaluation {evaluation_id} is {state.name}", metadata=_facts(row))
    if share is not None:
        _check_share(tx, row["tenant"], share)
    now = tx.now()
    applied = request.applied_limits
    claimed = _compare_and_set(
        tx,
        row,
        state=int(State.RUNNING),
        attempt=row["attempt"] + 1,
        executor_id=request.executor_id,
        lease_expires_at=now + request.lease_us,
        start_time=now,
        runtime_digest=request.runtime_digest,
        **_applied_values(applied),
        **_empty_output(),
        **dict.fromkeys(_TIMELINE),
    )
    if row["attempt"] > 0:  # a lost attempt's partial output; sequences restart per attempt
        tx.conn.execute(_DROP_OUTPUT, {"id": evaluation_id})
    return evaluation_of(tx, claimed, View.FULL)


def _check_share_request(share: TenantShare) -> None:
    if min(share.max_running, share.fair_running) < 0:
        raise invalid("tenant_share", "max_running and fair_running must not be negative")
    if len(share.ending) > _ENDING_LIMIT:
        raise invalid("tenant_share.ending", f"at most {_ENDING_LIMIT} evaluations")
    for evaluation_id in share.ending:
        require("tenant_share.ending", evaluation_id, 256)


def _check_share(tx: Tx, tenant: str, share: TenantShare) -> None:
    """Refuse a claim that would take ``tenant`` past its share (TenantAtLimit).

    Past ``max_running``: always. Past ``fair_running``: only while another tenant running
    fewer than ``fair_running`` has QUEUED work, so a lone tenant may fill an idle pool. A tenant
    that is refused keeps what runs (nothing is preempted); it gets more as its runs end. The
    fair share counts no run in ``share.ending`` (its sandbox is gone, its result on the way),
    whichever tenant it is of; the cap counts every RUNNING evaluation.
    """
    if share.max_running <= 0 and share.fair_running <= 0:
        return
    if tx.postgres:  # one tenant's claims in turn, so two cannot both take the last place
        tx.conn.execute(_TENANT_LOCK, {"tenant": tenant})
    running = _running(tx, tenant)
    facts = {"tenant": tenant, "running": str(running)}
    if 0 < share.max_running <= running:
        facts["limit"] = str(share.max_running)
        raise TenantAtLimit(f"tenant runs {running}, its cap", metadata=facts)
    if not 0 < share.fair_running <= running or not _another_waiting(tx, tenant, share):
        return
    if share.ending:  # asked last: a lone tenant's claims never need it
        running -= _ending_of(tx, tenant, share.ending)
        facts["running"] = str(running)
    if share.fair_running <= running:
        facts["limit"] = str(share.fair_running)
        raise TenantAtLimit(
            f"tenant runs {running}, its fair share, while others wait", metadata=facts
        )


def _running(tx: Tx, tenant: str) -> int:
    return int(tx.conn.scalar(_RUNNING_OF_TENANT, {"tenant": tenant}) or 0)


def _ending_of(tx: Tx, tenant: str, ending: tuple[str, ...]) -> int:
    params = {"tenant": tenant, "ending": list(ending)}
    return int(tx.conn.scalar(_ENDING_OF_TENANT, params) or 0)


def _another_waiting(tx: Tx, tenant: str, share: TenantShare) -> bool:
    """Whether another tenant below its fair share has QUEUED work."""
    params = {"tenant": tenant, "fair": share.fair_running, "ending": list(share.ending)}
    return tx.conn.scalar(_WAITING_BELOW_SHARE, params) is not None


def _waiting_below_share() -> Select[tuple[str]]:
    waiting = (
        select(_E.tenant)
        .where(_E.state == int(State.QUEUED), _E.tenant != bindparam("tenant"))
        .distinct()
        .limit(_WAITING_TENANTS_CHECKED)
        .subquery()
    )
    evaluations_running = evaluations.alias("running")
    its_running = (
        select(func.count())
        .where(
            evaluations_running.c.state == int(State.RUNNING),
            evaluations_running.c.tenant == waiting.c.tenant,
            evaluations_running.c.id.not_in(bindparam("ending", expanding=True)),
        )
        .correlate(waiting)
        .scalar_subquery()
    )
    return select(waiting.c.tenant).where(its_running < bindparam("fair")).limit(1)


_WAITING_BELOW_SHARE = _waiting_below_share()


def _applied_values(applied: AppliedLimits | None) -> dict[str, int | None]:
    return {
        "applied_wall_timeout_us": applied.wall_timeout_us if applied else None,
        "applied_memory_bytes": applied.memory_bytes if applied else None,
        "applied_max_processes": applied.max_processes if applied else None,
        "applied_max_output_bytes": applied.max_output_bytes if applied else None,
        "applied_cpu_millicores": applied.cpu_millicores if applied else None,
        "applied_scratch_bytes": applied.scratch_bytes if applied else None,
    }


def _empty_output() -> dict[str, int | bool]:
    return {
        "stdout_bytes": 0,
        "stderr_bytes": 0,
        "stdout_next_seq": 0,
        "stderr_next_seq": 0,
        "stdout_truncated": False,
        "stderr_truncated": False,
    }


def renew(tx: Tx, evaluation_id: str, attempt: int, lease_us: int) -> tuple[int, bool]:
    """Extend the running attempt's lease; return (lease end, whether a cancel was asked)."""
    _check_lease(lease_us)
    row = lock_running(tx, evaluation_id, attempt)
    expires = tx.now() + lease_us
    _compare_and_set(tx, row, lease_expires_at=expires)
    return expires, bool(row["cancel_requested"])


def _timeline(timings: RunTimings | None, start: int | None, end: int) -> dict[str, int | None]:
    """The run's moments on the database clock: each measured offset after the claim added to
    ``start`` (the claim's time), kept in order and within ``[start, end]``. Output stored with
    the result (no offset measured) was stored at ``end``."""
    moments: dict[str, int | None] = dict.fromkeys(_TIMELINE)
    if timings is None or start is None or timings.sandbox_ready_us is None:
        return moments
    offsets = (timings.sandbox_ready_us, timings.program_ended_us, timings.output_stored_us)
    floor = start
    for name, offset in zip(_TIMELINE, offsets, strict=True):
        moment = end if offset is None else min(end, max(floor, start + offset))
        moments[name] = floor = moment
    return moments


_TIMELINE = ("run_start_time", "run_end_time", "output_stored_time")


def complete(
    tx: Tx,
    evaluation_id: str,
    attempt: int,
    state: State,
    result: Result,
    timings: RunTimings | None = None,
) -> Evaluation:
    """RUNNING -> terminal for the attempt holding it; CANCELLED if a cancel was requested.

    QUEUED -> ERROR is allowed too, for the platform giving up on a job it could not run (dead
    letters, exhausted attempts): fenced on the attempt the evaluation is queued at. ``timings``
    become the run's moments (see :func:`_timeline`).
    """
    if not state.terminal:
        raise invalid("state", "must be a terminal state")
    row = _lock(tx, evaluation_id)
    giving_up = row["state"] == State.QUEUED and state is State.ERROR
    if row["attempt"] != attempt or not (row["state"] == State.RUNNING or giving_up):
        raise _refusal(row, attempt)
    cause, fault = result.cause, result.fault
    if row["cancel_requested"]:
        state, cause, fault = State.CANCELLED, TerminationCause.CANCELLED, Fault.USER
    now = tx.now()
    running = row["state"] == State.RUNNING
    completed = _compare_and_set(
        tx,
        row,
        state=int(state),
        end_time=now,
        **_timeline(timings if running else None, row["start_time"], now),
        lease_expires_at=None,
        result_cause=int(cause),
        result_fault=int(fault),
        result_exit_code=result.exit_code,
        result_signal=result.signal,
        result_detail=clean_text(result.detail, 4096),
        result_wall_time_us=result.wall_time_us,
        result_cpu_time_us=result.cpu_time_us,
        result_peak_memory_bytes=result.peak_memory_bytes,
        stdout_truncated=bool(row["stdout_truncated"]) or result.stdout_truncated,
        stderr_truncated=bool(row["stderr_truncated"]) or result.stderr_truncated,
    )
    return evaluation_of(tx, completed, View.BASIC)


def cancel(tx: Tx, tenant: str, evaluation_id: str, reason: str) -> tuple[Evaluation, State]:
    """Cancel: QUEUED ends CANCELLED now, RUNNING records the request, terminal is unchanged.

    Returns the evaluation afterwards and its state before. Another tenant's id is not found.
    """
    check_text("reason", reason, 1024)
    row = _lock(tx, evaluation_id)
    if row["tenant"] != tenant:
        raise EvaluationNotFound(
            f"evaluation {evaluation_id!r} not found", metadata={"evaluation": evaluation_id}
        )
    before = State(row["state"])
    if before is State.QUEUED:
        row = _compare_and_set(
            tx,
            row,
            **_cancelled(tx, reason or "cancelled while queued"),
            cancel_reason=reason,
        )
    elif before is State.RUNNING and not row["cancel_requested"]:
        row = _compare_and_set(tx, row, cancel_requested=True, cancel_reason=reason)
    return evaluation_of(tx, row, View.BASIC), before


def _cancelled(tx: Tx, detail: str) -> dict[str, Any]:
    return {
        "state": int(State.CANCELLED),
        "end_time": tx.now(),
        "lease_expires_at": None,
        "result_cause": int(TerminationCause.CANCELLED),
        "result_fault": int(Fault.USER),
        "result_detail": detail,
    }


def requeue(tx: Tx, evaluation_id: str, attempt: int, reason: str) -> Evaluation:
    """RUNNING -> QUEUED once the attempt's lease expired on the database clock.

    The next claim makes attempt + 1. A RUNNING evaluation whose cancel was requested ends
    CANCELLED instead: nobody wants it run again. The publish time is cleared so the
    scheduler's reconciler publishes the job again.
    """
    row = lock_running(tx, evaluation_id, attempt)
    now = tx.now()
    if row["lease_expires_at"] is not None and row["lease_expires_at"] > now:
        raise LeaseNotExpired(
            f"the lease of attempt {attempt} has not expired", metadata=_facts(row)
        )
    if row["cancel_requested"]:
        row = _compare_and_set(tx, row, **_cancelled(tx, "cancelled; its executor was lost"))
    else:
        row = _compare_and_set(
            tx, row, state=int(State.QUEUED), lease_expires_at=None, publish_time=None
        )
    logger.info(
        "attempt lost",
        extra={"evaluation": evaluation_id, "attempt": attempt, "why": clean_text(reason, 512)},
    )
    return evaluation_of(tx, row, View.BASIC)
