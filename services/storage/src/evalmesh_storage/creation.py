"""Creating evaluations, idempotent on (tenant, request_id) forever.

A repeat with the same spec fingerprint returns the stored evaluation (``created`` False); a
repeat with another spec is refused with REQUEST_ID_REUSED. The unique constraint on
(tenant, request_id) decides, races included: every request is inserted with ``ON CONFLICT DO
NOTHING``, and only a request whose insert found its key taken reads the stored row. A new
evaluation is answered from the row just written, so the common case is one statement (two with
labels). A batch is a handful of statements, not one per request.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from evalmesh_common.ids import is_evaluation_id, new_evaluation_id
from evalmesh_storage.db import Tx
from evalmesh_storage.domain import Evaluation, Spec, State, View
from evalmesh_storage.errors import Aborted, RequestIdReused, invalid
from evalmesh_storage.models import evaluation_labels, evaluations
from evalmesh_storage.rows import evaluation_from_row, fetch_evaluations
from evalmesh_storage.validation import check_spec, require

__all__ = ["NewEvaluation", "create_evaluations"]

_E = evaluations.c
_Key = tuple[str, str]
_CHUNK = 200  # rows per statement: well under every backend's bound-parameter limit
_INSERT_NEW = {
    name: dialect.insert(evaluations).on_conflict_do_nothing().returning(_E.id)
    for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))
}
# What a new row holds besides what an insert writes: the columns' server defaults.
_NEW_ROW: dict[str, Any] = {
    "attempt": 0,
    "executor_id": "",
    "lease_expires_at": None,
    "cancel_requested": False,
    "cancel_reason": "",
    "runtime_digest": "",
    **dict.fromkeys(
        [
            "applied_wall_timeout_us",
            "applied_memory_bytes",
            "applied_max_processes",
            "applied_max_output_bytes",
            "applied_cpu_millicores",
            "applied_scratch_bytes",
            "result_exit_code",
            "result_signal",
            "result_wall_time_us",
            "result_cpu_time_us",
            "start_time",
            "end_time",
            "run_start_time",
            "run_end_time",
            "output_stored_time",
            "publish_time",
        ]
    ),
    "result_cause": 0,
    "result_fault": 0,
    "result_detail": "",
    "result_peak_memory_bytes": 0,
    **dict.fromkeys(["stdout_bytes", "stderr_bytes", "stdout_next_seq", "stderr_next_seq"], 0),
    "stdout_truncated": False,
    "stderr_truncated": False,
    "publish_count": 0,
}


@dataclass(frozen=True, slots=True)
class NewEvaluation:
    """One evaluation to create."""

    tenant: str
    request_id: str
    spec: Spec
    id: str = ""  # the id a new evaluation gets; empty: a new one

    @property
    def key(self) -> _Key:
        """The idempotency key."""
        return (self.tenant, self.request_id)


def create_evaluations(
    tx: Tx, batch: Sequence[NewEvaluation], prefixes: Sequence[str] | None = None
) -> list[tuple[Evaluation, bool]]:
    """Create each request (or find its earlier creation); return (evaluation, created) each.

    ``prefixes`` name each request in errors (e.g. ``requests[3].``). Any refusal fails all.
    """
    names = prefixes or [""] * len(batch)
    fingerprints = [_checked(new, name) for new, name in zip(batch, names, strict=True)]
    now = tx.now()
    fresh: dict[_Key, dict[str, Any]] = {}  # the first request of each key
    for new, fingerprint in zip(batch, fingerprints, strict=True):
        if new.key not in fresh:
            fresh[new.key] = _row(new.id or new_evaluation_id(), new, fingerprint, now)
    inserted = _insert(tx, list(fresh.values()), batch)
    taken = [key for key, row in fresh.items() if row["id"] not in inserted]
    known = {
        key: (row["id"], row["spec_fingerprint"])
        for key, row in fresh.items()
        if row["id"] in inserted
    }
    known.update(_existing(tx, taken))
    ids = [
        _resolve(known, new, fingerprint, name)
        for new, fingerprint, name in zip(batch, fingerprints, names, strict=True)
    ]
    found = {
        row["id"]: _created(row, new.spec.labels)
        for row, new in _pairs(list(fresh.values()), batch)
        if row["id"] in inserted
    }
    found.update((e.id, e) for e in _fetch(tx, set(ids) - inserted))
    results = []
    for evaluation_id in ids:
        # A key repeated inside the batch was created by its first request only.
        results.append((found[evaluation_id], evaluation_id in inserted))
        inserted.discard(evaluation_id)
    return results


def _created(row: dict[str, Any], labels: Mapping[str, str]) -> Evaluation:
    """The BASIC view of an evaluation just inserted as ``row`` (the rest are its defaults)."""
    basic = {key: value for key, value in row.items() if key not in ("code", "stdin")}
    return evaluation_from_row({**_NEW_ROW, **basic}, dict(labels))


def _checked(new: NewEvaluation, prefix: str) -> str:
    require(f"{prefix}tenant", new.tenant, 64)
    require(f"{prefix}request_id", new.request_id, 128)
    if new.id and not is_evaluation_id(new.id):
        raise invalid(f"{prefix}id", 'must be "ev_" and a ULID')
    check_spec(new.spec, f"{prefix}spec.")
    return new.spec.fingerprint()


def _existing(tx: Tx, keys: Iterable[_Key]) -> dict[_Key, tuple[str, str]]:
    """The stored (id, fingerprint) of each key that exists."""
    by_tenant: dict[str, list[str]] = {}
    for tenant, request_id in set(keys):
        by_tenant.setdefault(tenant, []).append(request_id)
    found: dict[_Key, tuple[str, str]] = {}
    for tenant, request_ids in by_tenant.items():
        for start in range(0, len(request_ids), _CHUNK):
            query = select(_E.tenant, _E.request_id, _E.id, _E.spec_fingerprint).where(
                and_(_E.tenant == tenant, _E.request_id.in_(request_ids[start : start + _CHUNK]))
            )
            for row in tx.conn.execute(query):
                found[(row[0], row[1])] = (row[2], row[3])
    return found


def _row(evaluation_id: str, new: NewEvaluation, fingerprint: str, now: int) -> dict[str, Any]:
    spec, limits = new.spec, new.spec.limits
    return {
        "id": evaluation_id,
        "tenant": new.tenant,
        "request_id": new.request_id,
        "spec_fingerprint": fingerprint,
        "code": spec.code.encode("utf-8"),
        "stdin": spec.stdin,
        "language": spec.language,
        "runtime": spec.runtime,
        "priority": int(spec.priority),
        "limit_wall_timeout_us": limits.wall_timeout_us,
        "limit_memory_bytes": limits.memory_bytes,
        "limit_max_processes": limits.max_processes,
        "limit_max_output_bytes": limits.max_output_bytes,
        "limit_cpu_millicores": limits.cpu_millicores,
        "state": int(State.QUEUED),
        "create_time": now,
    }


def _insert(tx: Tx, rows: list[dict[str, Any]], batch: Sequence[NewEvaluation]) -> set[str]:
    statement = _INSERT_NEW["postgresql" if tx.postgres else "sqlite"]
    inserted: set[str] = set()
    for start in range(0, len(rows), _CHUNK):
        # RETURNING, because rowcount is not reliable for INSERT on every driver.
        inserted.update(tx.conn.scalars(statement, rows[start : start + _CHUNK]).all())
    labels = [
        {"evaluation_id": row["id"], "key": key, "value": value}
        for row, new in _pairs(rows, batch)
        if row["id"] in inserted
        for key, value in new.spec.labels.items()
    ]
    if labels:
        tx.conn.execute(insert(evaluation_labels), labels)
    return inserted


def _pairs(
    rows: list[dict[str, Any]], batch: Sequence[NewEvaluation]
) -> list[tuple[dict[str, Any], NewEvaluation]]:
    by_key = {new.key: new for new in reversed(batch)}  # the first request of a key wins
    return [(row, by_key[(row["tenant"], row["request_id"])]) for row in rows]


def _resolve(
    known: dict[_Key, tuple[str, str]], new: NewEvaluation, fingerprint: str, prefix: str
) -> str:
    if new.key not in known:  # the conflicting row vanished (purged) between two statements
        raise Aborted("a concurrent create and purge collided; retry", reason="CREATE_CONFLICT")
    evaluation_id, stored = known[new.key]
    if stored != fingerprint:
        raise RequestIdReused(
            f"{prefix}request_id {new.request_id!r} was already used with a different spec",
            metadata={"request_id": new.request_id, "evaluation": evaluation_id},
        )
    return evaluation_id


def _fetch(tx: Tx, ids: set[str]) -> list[Evaluation]:
    wanted = sorted(ids)
    found: list[Evaluation] = []
    for start in range(0, len(wanted), _CHUNK):
        found += fetch_evaluations(tx, _E.id.in_(wanted[start : start + _CHUNK]), view=View.BASIC)
    return found
