"""Reading and listing evaluations (creation is in ``creation``, changes in ``state_machine``).

Listing is keyset-paginated on (create_time desc, id desc): rows never move in that order, so
concurrent inserts can neither make a page skip an older evaluation nor repeat one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, or_

from evalmesh_storage import queue
from evalmesh_storage.db import Tx
from evalmesh_storage.domain import Evaluation, Page, Priority, State, View
from evalmesh_storage.errors import EvaluationNotFound, invalid
from evalmesh_storage.models import evaluation_labels, evaluations
from evalmesh_storage.rows import fetch_evaluations, fetch_one
from evalmesh_storage.tokens import PageTokens
from evalmesh_storage.validation import check_page_size, require

__all__ = ["ListQuery", "get_evaluation", "list_evaluations"]

_E = evaluations.c
_NEWEST_FIRST = (_E.create_time.desc(), _E.id.desc())


@dataclass(frozen=True, slots=True)
class ListQuery:
    """A listing of one tenant's evaluations; filters combine with AND."""

    tenant: str
    page_size: int = 0
    page_token: str = ""
    states: Sequence[State] = ()
    priorities: Sequence[Priority] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    create_time_after: int | None = None
    create_time_before: int | None = None
    view: View = View.BASIC

    def filters(self) -> dict[str, Any]:
        """The filter values a page token is bound to (page size and view may change)."""
        return {
            "states": sorted({int(s) for s in self.states}),
            "priorities": sorted({int(p) for p in self.priorities}),
            "labels": sorted(self.labels.items()),
            "after": self.create_time_after,
            "before": self.create_time_before,
        }


def get_evaluation(
    tx: Tx, evaluation_id: str, tenant: str, view: View, include_queue_position: bool = False
) -> Evaluation:
    """Read one evaluation; an empty ``tenant`` reads across tenants (platform callers)."""
    evaluation = fetch_one(tx, evaluation_id, view, tenant)
    if evaluation is None:
        raise EvaluationNotFound(
            f"evaluation {evaluation_id!r} not found", metadata={"evaluation": evaluation_id}
        )
    if include_queue_position and evaluation.state is State.QUEUED:
        position, estimate = queue.position(tx, evaluation)
        evaluation = dataclasses.replace(
            evaluation, queue_position=position, estimated_start_time=estimate
        )
    return evaluation


def list_evaluations(tx: Tx, query: ListQuery, tokens: PageTokens) -> Page[Evaluation]:
    """Return one page of the tenant's evaluations, newest first, with a resumable token."""
    require("tenant", query.tenant, 64)
    size = check_page_size(query.page_size)
    filters = query.filters()
    where = _filter_clauses(query)
    if query.page_token:
        after = tokens.parse(query.page_token, "evaluations", query.tenant, filters)
        where.append(_after_cursor(after))
    rows = fetch_evaluations(tx, *where, view=query.view, order_by=_NEWEST_FIRST, limit=size + 1)
    if len(rows) <= size:
        return Page(rows, "")
    last = rows[size - 1]
    token = tokens.issue("evaluations", query.tenant, filters, (last.create_time, last.id))
    return Page(rows[:size], token)


def _filter_clauses(query: ListQuery) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = [_E.tenant == query.tenant]
    if query.states:
        where.append(_E.state.in_(sorted({int(s) for s in query.states})))
    if query.priorities:
        where.append(_E.priority.in_(sorted({int(p) for p in query.priorities})))
    if query.create_time_after is not None:
        where.append(_E.create_time >= query.create_time_after)
    if query.create_time_before is not None:
        where.append(_E.create_time < query.create_time_before)
    for key, value in sorted(query.labels.items()):
        if not key:
            raise invalid("labels", "label keys must not be empty")
        label = evaluation_labels.c
        where.append(
            exists().where(label.evaluation_id == _E.id, label.key == key, label.value == value)
        )
    return where


def _after_cursor(cursor: tuple[int, str]) -> ColumnElement[bool]:
    create_time, last_id = cursor
    return or_(_E.create_time < create_time, and_(_E.create_time == create_time, _E.id < last_id))
