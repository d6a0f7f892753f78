"""Engines, transactions and the database clock, for SQLite and PostgreSQL alike.

Every unit of work runs in one transaction that is retried as a whole on transient errors (see
:mod:`evalmesh_storage.retry`). On SQLite, writers take the write lock when they begin
(``BEGIN IMMEDIATE``) so two writers never deadlock upgrading read locks; readers use a plain
deferred ``BEGIN`` and, with WAL, never block writers. The pool pings connections before use,
so a restarted PostgreSQL is picked up without restarting the service.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from sqlalchemy import event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from evalmesh_storage.errors import InvalidArgument
from evalmesh_storage.retry import RetryPolicy, run_with_retries

__all__ = ["WRITE_OPTION", "Database", "DatabaseSettings", "Tx", "create_engine"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

WRITE_OPTION = "evalmesh_write"
"""Execution option marking a write transaction (SQLite then begins IMMEDIATE)."""
_NOW_SQL = {
    # clock_timestamp(), not now(): the real time even late in a long transaction.
    "postgresql": "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)",
    # SQLite's clock has millisecond resolution; keep the integer exact.
    "sqlite": "SELECT CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER) * 1000",
}


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    """How to reach the database and how hard to try."""

    url: str
    pool_size: int = 10
    max_overflow: int = 10
    pool_timeout: float = 10.0
    busy_timeout: float = 5.0
    connect_timeout: float = 5.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)


def create_engine(settings: DatabaseSettings) -> AsyncEngine:
    """Create the engine for ``settings.url``: ``sqlite+aiosqlite`` or ``postgresql+psycopg``."""
    url = make_url(settings.url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(settings)
    if backend == "postgresql":
        return create_async_engine(
            url,
            pool_pre_ping=True,
            pool_size=settings.pool_size,
            max_overflow=settings.max_overflow,
            pool_timeout=settings.pool_timeout,
            connect_args={"connect_timeout": max(2, round(settings.connect_timeout))},
        )
    raise ValueError(f"unsupported database backend {backend!r}: use sqlite or postgresql")


def _sqlite_engine(settings: DatabaseSettings) -> AsyncEngine:
    url = make_url(settings.url)
    if not url.database or url.database == ":memory:":
        raise ValueError("SQLite needs a file path (an in-memory database is per connection)")
    Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(
        url,
        pool_pre_ping=True,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout=settings.pool_timeout,
    )
    busy_ms = round(settings.busy_timeout * 1000)

    @event.listens_for(engine.sync_engine, "connect")
    def _configure(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        # Take transaction control away from the driver; the "begin" hook below emits BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            f"PRAGMA busy_timeout = {busy_ms}",
            "PRAGMA journal_mode = WAL",
            "PRAGMA foreign_keys = ON",
            # The system of record: a committed write survives power loss, not just a crash.
            "PRAGMA synchronous = FULL",
        ):
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(connection: Connection) -> None:
        write = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


@dataclass(slots=True)
class Tx:
    """One open transaction: its connection and the database clock, read once per transaction."""

    conn: AsyncConnection
    postgres: bool
    _now: int | None = None

    async def now(self) -> int:
        """Return the database's current time in microseconds since the epoch (UTC)."""
        if self._now is None:
            dialect = "postgresql" if self.postgres else "sqlite"
            self._now = int(await self.conn.scalar(text(_NOW_SQL[dialect])) or 0)
        return self._now


class Database:
    """Runs units of work in retried transactions against one engine."""

    def __init__(self, engine: AsyncEngine, retry: RetryPolicy | None = None) -> None:
        self.engine = engine
        self.retry = retry or RetryPolicy()
        self.postgres = engine.dialect.name == "postgresql"
        self._writer = engine.execution_options(**{WRITE_OPTION: True})

    async def write(self, work: Callable[[Tx], Awaitable[T]], what: str = "write") -> T:
        """Run ``work`` in a write transaction, retrying transient failures."""

        async def once() -> T:
            async with self._writer.begin() as conn:
                return await work(Tx(conn, self.postgres))

        return await self._run(once, what)

    async def read(self, work: Callable[[Tx], Awaitable[T]], what: str = "read") -> T:
        """Run ``work`` in a read transaction, retrying transient failures."""

        async def once() -> T:
            async with self.engine.connect() as conn:
                return await work(Tx(conn, self.postgres))

        return await self._run(once, what)

    async def _run(self, once: Callable[[], Awaitable[T]], what: str) -> T:
        try:
            return await run_with_retries(once, self.retry, what=what)
        except sa_exc.DataError as error:
            # A value the column cannot hold (NUL in PostgreSQL text, an int out of range):
            # the request is wrong, not the platform.
            raise InvalidArgument(
                "a value in the request cannot be stored", reason="UNSTORABLE_VALUE"
            ) from error

    async def ping(self) -> bool:
        """Return True when ``SELECT 1`` succeeds now; no retries (this is the health probe)."""
        async with self.engine.connect() as conn:
            return bool(await conn.scalar(text("SELECT 1")) == 1)

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()
