"""Small builders shared by the storage tests (not fixtures: plain functions)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

from evalmesh_storage.creation import NewEvaluation
from evalmesh_storage.domain import (
    AppliedLimits,
    Evaluation,
    Fault,
    Limits,
    Priority,
    Result,
    Spec,
    State,
    TerminationCause,
)
from evalmesh_storage.state_machine import Claim
from evalmesh_storage.storage import Storage

_requests = itertools.count(1)
SECOND_US = 1_000_000


def spec(
    code: str = "print('hi')",
    *,
    priority: Priority = Priority.NORMAL,
    labels: Mapping[str, str] | None = None,
    max_output_bytes: int | None = None,
) -> Spec:
    """A small valid spec."""
    return Spec(
        code=code,
        stdin=b"",
        language="python",
        runtime="python",
        priority=priority,
        limits=Limits(wall_timeout_us=30 * SECOND_US, max_output_bytes=max_output_bytes),
        labels=dict(labels or {}),
    )


def new(
    tenant: str = "acme", request_id: str | None = None, **spec_options: object
) -> NewEvaluation:
    """A NewEvaluation with a unique request id unless one is given."""
    rid = request_id or f"req-{next(_requests)}"
    return NewEvaluation(tenant, rid, spec(**spec_options))  # type: ignore[arg-type]


async def create(storage: Storage, tenant: str = "acme", **spec_options: object) -> Evaluation:
    """Create one evaluation and return it."""
    evaluation, created = await storage.create_evaluation(new(tenant, **spec_options))  # type: ignore[arg-type]
    assert created
    return evaluation


def claim(executor: str = "executor-1", lease_us: int = 30 * SECOND_US, cap: int = 1024) -> Claim:
    """A claim whose applied output cap is ``cap`` bytes per stream."""
    return Claim(
        executor_id=executor,
        lease_us=lease_us,
        runtime_digest="sha256:abc",
        applied_limits=AppliedLimits(
            wall_timeout_us=30 * SECOND_US,
            memory_bytes=256 << 20,
            max_processes=64,
            max_output_bytes=cap,
            cpu_millicores=1000,
            scratch_bytes=64 << 20,
        ),
    )


async def running(storage: Storage, tenant: str = "acme", **options: object) -> Evaluation:
    """Create and claim an evaluation; it is RUNNING at attempt 1."""
    cap = int(options.pop("cap", 1024))  # type: ignore[call-overload]
    evaluation = await create(storage, tenant, **options)
    claimed = await storage.claim(evaluation.id, claim(cap=cap))
    assert claimed.state is State.RUNNING
    return claimed


def exited(code: int = 0) -> Result:
    """The result of a program that exited by itself."""
    return Result(
        cause=TerminationCause.EXITED,
        fault=Fault.NONE if code == 0 else Fault.USER,
        exit_code=code,
        detail=f"exited with {code}",
        wall_time_us=SECOND_US,
        cpu_time_us=SECOND_US // 2,
        peak_memory_bytes=1 << 20,
    )
