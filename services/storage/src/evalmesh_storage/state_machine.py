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

from sqlalchemy import RowMapping, delete, func, select, text, update

from evalmesh_storage.db import Tx
from evalmesh_storage.domain import (
    AppliedLimits,
    Evaluation,
    Fault,
    Result,
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
from evalmesh_storage.rows import fetch_evaluations
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
_E = evaluations.c
_LOCKED = (
    _E.id,
    _E.tenant,
    _E.state,
    _E.attempt,
    _E.cancel_requested,
    _E.lease_expires_at,
    _E.applied_max_output_bytes,
    _E.limit_max_output_bytes,
    _E.stdout_bytes,
    _E.stderr_bytes,
    _E.stdout_next_seq,
    _E.stderr_next_seq,
    _E.stdout_truncated,
    _E.stderr_truncated,
)


@dataclass(frozen=True, slots=True)
class Claim:
    """An executor's claim on a QUEUED evaluation."""

    executor_id: str
    lease_us: int
    runtime_digest: str = ""
    applied_limits: AppliedLimits | None = None
    tenant_share: TenantShare | None = None


async def _lock(tx: Tx, evaluation_id: str) -> RowMapping:
    query = select(*_LOCKED).where(_E.id == evaluation_id).with_for_update()
    row = (await tx.conn.execute(query)).mappings().first()
    if row is None:
        raise EvaluationNotFound(
            f"evaluation {evaluation_id!r} not found", metadata={"evaluation": evaluation_id}
        )
    return row


async def _compare_and_set(tx: Tx, seen: RowMapping, **values: Any) -> None:
    statement = (
        update(evaluations)
        .where(_E.id == seen["id"], _E.state == seen["state"], _E.attempt == seen["attempt"])
        .values(**values)
    )
    if (await tx.conn.execute(statement)).rowcount != 1:
        # Unreachable while the row lock holds; never report success for a write not made.
        raise Aborted("the evaluation changed concurrently; retry", reason="CONCURRENT_UPDATE")


def _facts(row: RowMapping) -> dict[str, str]:
    return {
        "evaluation": row["id"],
        "state": State(row["state"]).name,
        "attempt": str(row["attempt"]),
    }


def _refusal(row: RowMapping, attempt: int) -> Exception:
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


async def lock_running(tx: Tx, evaluation_id: str, attempt: int) -> RowMapping:
    """Lock the evaluation and check that ``attempt`` holds it RUNNING; else refuse."""
    row = await _lock(tx, evaluation_id)
    if row["state"] != State.RUNNING or row["attempt"] != attempt:
        raise _refusal(row, attempt)
    return row


def _check_lease(lease_us: int) -> None:
    if not 0 < lease_us <= MAX_LEASE_US:
        raise invalid("lease_duration", "must be positive and at most 24 hours")


async def claim(tx: Tx, evaluation_id: str, request: Claim) -> Evaluation:
    """QUEUED -> RUNNING for one executor; every other claimer is refused."""
    require("executor_id", request.executor_id, 256)
    check_text("runtime_digest", request.runtime_digest, 256)
    _check_lease(request.lease_us)
    share = request.tenant_share
    if share is not None and min(share.max_running, share.fair_running) < 0:
        raise invalid("tenant_share", "max_running and fair_running must not be negative")
    row = await _lock(tx, evaluation_id)
    state = State(row["state"])
    if state is State.RUNNING:
        raise AlreadyClaimed(f"evaluation {evaluation_id} is already running", metadata=_facts(row))
    if state.terminal:
        raise AlreadyTerminal(f"evaluation {evaluation_id} is {state.name}", metadata=_facts(row))
    if share is not None:
        await _check_share(tx, row["tenant"], share)
    now = await tx.now()
    applied = request.applied_limits
    await _compare_and_set(
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
    )
    if row["attempt"] > 0:  # a lost attempt's partial output; sequences restart per attempt
        await tx.conn.execute(
            delete(output_chunks).where(output_chunks.c.evaluation_id == evaluation_id)
        )
    return (await fetch_evaluations(tx, _E.id == evaluation_id, view=View.FULL))[0]


async def _check_share(tx: Tx, tenant: str, share: TenantShare) -> None:
    """Refuse a claim that would take ``tenant`` past its share (TenantAtLimit).

    Past ``max_running``: always. Past ``fair_running``: only while another tenant running
    fewer than ``fair_running`` has QUEUED work, so a lone tenant may fill an idle pool. A tenant
    that is refused keeps what runs (nothing is preempted); it gets more as its runs end.
    """
    if share.max_running <= 0 and share.fair_running <= 0:
        return
    if tx.postgres:  # one tenant's claims in turn, so two cannot both take the last place
        lock = text("SELECT pg_advisory_xact_lock(hashtextextended(:tenant, 0))")
        await tx.conn.execute(lock, {"tenant": tenant})
    running = await _running(tx, tenant)
    facts = {"tenant": tenant, "running": str(running)}
    if 0 < share.max_running <= running:
        facts["limit"] = str(share.max_running)
        raise TenantAtLimit(f"tenant runs {running}, its cap", metadata=facts)
    if 0 < share.fair_running <= running and await _another_waiting(tx, tenant, share):
        facts["limit"] = str(share.fair_running)
        raise TenantAtLimit(
            f"tenant runs {running}, its fair share, while others wait", metadata=facts
        )


async def _running(tx: Tx, tenant: str) -> int:
    query = select(func.count()).where(_E.state == int(State.RUNNING), _E.tenant == tenant)
    return int(await tx.conn.scalar(query) or 0)


async def _another_waiting(tx: Tx, tenant: str, share: TenantShare) -> bool:
    """Whether another tenant below its fair share has QUEUED work."""
    waiting = (
        select(_E.tenant)
        .where(_E.state == int(State.QUEUED), _E.tenant != tenant)
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
        )
        .correlate(waiting)
        .scalar_subquery()
    )
    query = select(waiting.c.tenant).where(its_running < share.fair_running).limit(1)
    return (await tx.conn.scalar(query)) is not None


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


async def renew(tx: Tx, evaluation_id: str, attempt: int, lease_us: int) -> tuple[int, bool]:
    """Extend the running attempt's lease; return (lease end, whether a cancel was asked)."""
    _check_lease(lease_us)
    row = await lock_running(tx, evaluation_id, attempt)
    expires = await tx.now() + lease_us
    await _compare_and_set(tx, row, lease_expires_at=expires)
    return expires, bool(row["cancel_requested"])


async def complete(
    tx: Tx, evaluation_id: str, attempt: int, state: State, result: Result
) -> Evaluation:
    """RUNNING -> terminal for the attempt holding it; CANCELLED if a cancel was requested.

    QUEUED -> ERROR is allowed too, for the platform giving up on a job it could not run (dead
    letters, exhausted attempts): fenced on the attempt the evaluation is queued at.
    """
    if not state.terminal:
        raise invalid("state", "must be a terminal state")
    row = await _lock(tx, evaluation_id)
    giving_up = row["state"] == State.QUEUED and state is State.ERROR
    if row["attempt"] != attempt or not (row["state"] == State.RUNNING or giving_up):
        raise _refusal(row, attempt)
    cause, fault = result.cause, result.fault
    if row["cancel_requested"]:
        state, cause, fault = State.CANCELLED, TerminationCause.CANCELLED, Fault.USER
    await _compare_and_set(
        tx,
        row,
        state=int(state),
        end_time=await tx.now(),
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
    return (await fetch_evaluations(tx, _E.id == evaluation_id, view=View.BASIC))[0]


async def cancel(tx: Tx, tenant: str, evaluation_id: str, reason: str) -> tuple[Evaluation, State]:
    """Cancel: QUEUED ends CANCELLED now, RUNNING records the request, terminal is unchanged.

    Returns the evaluation afterwards and its state before. Another tenant's id is not found.
    """
    check_text("reason", reason, 1024)
    row = await _lock(tx, evaluation_id)
    if row["tenant"] != tenant:
        raise EvaluationNotFound(
            f"evaluation {evaluation_id!r} not found", metadata={"evaluation": evaluation_id}
        )
    before = State(row["state"])
    if before is State.QUEUED:
        await _compare_and_set(
            tx,
            row,
            **await _cancelled(tx, reason or "cancelled while queued"),
            cancel_reason=reason,
        )
    elif before is State.RUNNING and not row["cancel_requested"]:
        await _compare_and_set(tx, row, cancel_requested=True, cancel_reason=reason)
    found = await fetch_evaluations(tx, _E.id == evaluation_id, view=View.BASIC)
    return found[0], before


async def _cancelled(tx: Tx, detail: str) -> dict[str, Any]:
    return {
        "state": int(State.CANCELLED),
        "end_time": await tx.now(),
        "lease_expires_at": None,
        "result_cause": int(TerminationCause.CANCELLED),
        "result_fault": int(Fault.USER),
        "result_detail": detail,
    }


async def requeue(tx: Tx, evaluation_id: str, attempt: int, reason: str) -> Evaluation:
    """RUNNING -> QUEUED once the attempt's lease expired on the database clock.

    The next claim makes attempt + 1. A RUNNING evaluation whose cancel was requested ends
    CANCELLED instead: nobody wants it run again. The publish time is cleared so the
    scheduler's reconciler publishes the job again.
    """
    row = await lock_running(tx, evaluation_id, attempt)
    now = await tx.now()
    if row["lease_expires_at"] is not None and row["lease_expires_at"] > now:
        raise LeaseNotExpired(
            f"the lease of attempt {attempt} has not expired", metadata=_facts(row)
        )
    if row["cancel_requested"]:
        await _compare_and_set(tx, row, **await _cancelled(tx, "cancelled; its executor was lost"))
    else:
        await _compare_and_set(
            tx, row, state=int(State.QUEUED), lease_expires_at=None, publish_time=None
        )
    logger.info(
        "attempt lost",
        extra={"evaluation": evaluation_id, "attempt": attempt, "why": clean_text(reason, 512)},
    )
    return (await fetch_evaluations(tx, _E.id == evaluation_id, view=View.BASIC))[0]
