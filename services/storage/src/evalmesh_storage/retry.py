"""Which database errors are worth retrying, and the bounded backoff that retries them.

A transient error (connection refused or lost, SQLite busy/locked, a full disk, PostgreSQL
serialization failure, deadlock or shutdown) rolls the whole transaction back, so re-running the
unit of work is safe. When the budget is spent the caller gets :class:`Unavailable`, never a
false success.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import exc as sa_exc

from evalmesh_common.backoff import backoff_delay
from evalmesh_storage.errors import Unavailable

__all__ = ["RetryPolicy", "is_transient", "run_with_retries"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

# SQLSTATE classes: 08 connection exception, 53 insufficient resources, 57 operator intervention
# (admin shutdown, crash shutdown, cannot connect now); and single codes for lost races.
_TRANSIENT_CLASSES = ("08", "53", "57P")
_TRANSIENT_CODES = frozenset({"40001", "40P01", "55P03"})
# A full disk is an outage of the database, not a wrong request: the same call succeeds once
# space is freed, so the caller gets UNAVAILABLE and retries (PostgreSQL's 53100 is in class 53).
_SQLITE_TRANSIENT = (
    "database is locked",
    "database is busy",
    "disk i/o error",
    "unable to open",
    "database or disk is full",
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with equal jitter, within ``budget`` seconds in total."""

    budget: float = 3.0
    initial_backoff: float = 0.05
    max_backoff: float = 0.5

    def backoff(self, attempt: int) -> float:
        """Return the sleep before retry number ``attempt`` (1-based)."""
        return backoff_delay(attempt, base=self.initial_backoff, cap=self.max_backoff)


def is_transient(error: BaseException) -> bool:
    """True when ``error`` means "try again later" rather than "this request is wrong"."""
    if isinstance(error, sa_exc.TimeoutError | ConnectionError | TimeoutError):
        return True
    if not isinstance(error, sa_exc.DBAPIError):
        return False
    if error.connection_invalidated or isinstance(error, sa_exc.InterfaceError):
        return True
    sqlstate = getattr(error.orig, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate:
        return sqlstate in _TRANSIENT_CODES or sqlstate.startswith(_TRANSIENT_CLASSES)
    if type(error.orig).__module__.startswith("sqlite3"):
        message = str(error.orig).lower()
        return any(marker in message for marker in _SQLITE_TRANSIENT)
    # A driver error without SQLSTATE is raised before the server answered: connect failures.
    return isinstance(error, sa_exc.OperationalError)


async def run_with_retries(
    work: Callable[[], Awaitable[T]], policy: RetryPolicy, *, what: str = "database call"
) -> T:
    """Run ``work`` until it succeeds, fails permanently, or the budget is spent."""
    deadline = time.monotonic() + policy.budget
    attempt = 0
    while True:
        attempt += 1
        try:
            return await work()
        except Exception as error:
            if not is_transient(error):
                raise
            pause = policy.backoff(attempt)
            if time.monotonic() + pause > deadline:
                logger.warning("%s failed after %d tries: %s", what, attempt, _brief(error))
                raise Unavailable(
                    "the database is unavailable; retry with backoff",
                    reason="DATABASE_UNAVAILABLE",
                ) from error
            logger.info("%s failed (try %d), retrying: %s", what, attempt, _brief(error))
            await asyncio.sleep(pause)


def _brief(error: BaseException) -> str:
    cause = error.orig if isinstance(error, sa_exc.DBAPIError) else error
    first_line = (str(cause).splitlines() or [""])[0]
    return f"{type(cause).__name__}: {first_line}"
