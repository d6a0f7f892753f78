"""Engines, transactions and the database clock, for SQLite and PostgreSQL alike.

A unit of work is a plain function of a :class:`Tx`. The service's event loop hands each unit to a
thread that owns a connection, so a transaction costs one hop between the loop and that thread,
not one per statement (an async driver pays a thread hop and a loop wake-up for every statement,
which was most of the storage service's CPU).

Writes on SQLite go through one writer thread with group commit: it takes every unit waiting, runs
them in one transaction (``BEGIN IMMEDIATE``), each inside its own savepoint so a unit that fails
rolls back alone, and commits once, so a group costs one fsync. Nobody is answered before that
commit: an acknowledged write is as durable as with a commit per unit (``synchronous = FULL``).
One writer also means no busy waits on the write lock. Reads run on a few reader threads and,
with WAL, never block the writer or wait for it.

On PostgreSQL each unit is its own transaction on a pool of connections used from threads: its
row locks serialise conflicting transitions between storage replicas, and its WAL flush already
groups concurrent commits.

Durability. Every commit survives the crash (kill -9) of any process: the database is written
before anyone is answered. What a power cut may take depends on the unit: a *durable* unit (the
default: a creation, a cancel, a terminal result, API keys) is flushed to disk before its answer
(SQLite ``synchronous = FULL``; PostgreSQL ``synchronous_commit`` on). The others (a claim, a
lease renewal, output appended while running, a note that a job was published, a requeue) are
only written: a power cut may roll the most recent of them back, which the platform repairs (the
job is delivered again, the reconciler publishes again, output restarts with the attempt), and
the next durable commit flushes them too, since both databases flush their log in order. This
keeps one disk flush off the path of every claim.

Every unit is retried as a whole on transient errors (see :mod:`evalmesh_storage.retry`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy import event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry

from evalmesh_storage.errors import InvalidArgument
from evalmesh_storage.retry import RetryPolicy, run_with_retries

__all__ = ["WRITE_OPTION", "Database", "DatabaseSettings", "Tx", "create_engine"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
Work = Callable[["Tx"], T]

WRITE_OPTION = "evalmesh_write"
"""Execution option marking a write connection (SQLite then begins IMMEDIATE)."""
# clock_timestamp(), not now(): the real time even late in a long transaction.
_POSTGRES_NOW = text("SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)")
_ASYNC_COMMIT = text("SET LOCAL synchronous_commit = off")
_SQLITE_SYNC = {True: "PRAGMA synchronous = FULL", False: "PRAGMA synchronous = NORMAL"}
# The async drivers of earlier versions, still accepted in configuration.
_SYNC_DRIVERS = {"sqlite+aiosqlite": "sqlite+pysqlite", "postgresql+asyncpg": "postgresql+psycopg"}


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    """How to reach the database and how hard to try.

    ``pool_size`` is the number of connections (and threads) for PostgreSQL; SQLite uses one
    writer and ``readers`` reader connections. ``max_group`` bounds the units one SQLite commit
    may carry.
    """

    url: str
    pool_size: int = 10
    max_overflow: int = 10
    pool_timeout: float = 10.0
    busy_timeout: float = 5.0
    connect_timeout: float = 5.0
    readers: int = 4
    max_group: int = 256
    retry: RetryPolicy = field(default_factory=RetryPolicy)


def create_engine(settings: DatabaseSettings) -> Engine:
    """Create the engine for ``settings.url``: SQLite (a file) or ``postgresql+psycopg``."""
    url = make_url(settings.url)
    url = url.set(drivername=_SYNC_DRIVERS.get(url.drivername, url.drivername))
    backend = url.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(settings, url.render_as_string(hide_password=False))
    if backend == "postgresql":
        # No pre-ping: a dropped connection raises a transient error, the pool discards it and
        # the retry gets a fresh one, instead of every checkout paying a round trip.
        return sa_create_engine(
            url,
            pool_size=settings.pool_size,
            max_overflow=settings.max_overflow,
            pool_timeout=settings.pool_timeout,
            connect_args={"connect_timeout": max(2, round(settings.connect_timeout))},
        )
    raise ValueError(f"unsupported database backend {backend!r}: use sqlite or postgresql")


def _sqlite_engine(settings: DatabaseSettings, url: str) -> Engine:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise ValueError("SQLite needs a file path (an in-memory database is per connection)")
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa_create_engine(
        url,
        pool_size=settings.readers + 1,
        max_overflow=settings.max_overflow,
        pool_timeout=settings.pool_timeout,
        # Connections move between the pool and the reader threads.
        connect_args={"check_same_thread": False},
    )
    busy_ms = round(settings.busy_timeout * 1000)

    @event.listens_for(engine, "connect")
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

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        write = connection.get_execution_options().get(WRITE_OPTION, False)
        _execute(connection, "BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


@dataclass(slots=True)
class Tx:
    """One unit of work's view of its transaction: the connection and the database clock.

    ``memo`` is shared by every unit of one :class:`Database`, for values a unit may reuse from
    an earlier one (each user says for how long).
    """

    conn: Connection
    postgres: bool
    memo: dict[str, Any] = field(default_factory=dict)
    _now: int | None = None

    def now(self) -> int:
        """Return the database's current time in microseconds since the epoch (UTC).

        Read once per unit. SQLite runs inside this process, so its clock is the host's clock
        read directly; PostgreSQL's is the server's, shared by every storage replica.
        """
        if self._now is None:
            if self.postgres:
                self._now = int(self.conn.scalar(_POSTGRES_NOW) or 0)
            else:
                self._now = time.time_ns() // 1000
        return self._now


class Database:
    """Runs units of work in retried transactions against one engine."""

    def __init__(
        self,
        engine: Engine,
        retry: RetryPolicy | None = None,
        *,
        threads: int = 4,
        max_group: int = 256,
    ) -> None:
        self.engine = engine
        self.retry = retry or RetryPolicy()
        self.postgres = engine.dialect.name == "postgresql"
        self._pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="evalmesh-db")
        self._memo: dict[str, Any] = {}
        self._writer = None if self.postgres else _GroupWriter(engine, max_group, self._memo)

    async def write(self, work: Work[T], what: str = "write", *, durable: bool = True) -> T:
        """Run ``work`` in a write transaction, retrying transient failures.

        ``durable`` False lets a power cut roll this write back (see the module docstring).
        """
        if self._writer is not None:
            writer = self._writer
            return await self._run(lambda: writer.submit(work, durable), what)
        if not durable:
            return await self._run(lambda: self._in_thread(self._relaxed, work), what)
        return await self._run(lambda: self._in_thread(self._transaction, work), what)

    async def read(self, work: Work[T], what: str = "read", *, point: bool = False) -> T:
        """Run ``work`` in a read transaction, retrying transient failures.

        ``point`` marks a read of one row and what hangs off it (an evaluation by id, a slice of
        its output): on SQLite it runs on the calling thread, since a WAL read never waits for a
        lock and takes less time than handing it to a thread and back.
        """
        if point and self._writer is not None:
            return await self._run(lambda: _done(self._transaction(work)), what)
        return await self._run(lambda: self._in_thread(self._transaction, work), what)

    def _in_thread(self, call: Callable[[Work[T]], T], work: Work[T]) -> asyncio.Future[T]:
        return asyncio.get_running_loop().run_in_executor(self._pool, call, work)

    def _transaction(self, work: Work[T]) -> T:
        with self.engine.begin() as conn:
            return work(Tx(conn, self.postgres, self._memo))

    def _relaxed(self, work: Work[T]) -> T:
        with self.engine.begin() as conn:
            conn.execute(_ASYNC_COMMIT)  # PostgreSQL: for this transaction only
            return work(Tx(conn, self.postgres, self._memo))

    async def _run(self, once: Callable[[], asyncio.Future[T]], what: str) -> T:
        async def attempt() -> T:
            return await once()

        try:
            return await run_with_retries(attempt, self.retry, what=what)
        except sa_exc.DataError as error:
            # A value the column cannot hold (NUL in PostgreSQL text, an int out of range):
            # the request is wrong, not the platform.
            raise InvalidArgument(
                "a value in the request cannot be stored", reason="UNSTORABLE_VALUE"
            ) from error

    async def ping(self) -> bool:
        """Return True when ``SELECT 1`` succeeds now; no retries (this is the health probe)."""

        def select_one() -> bool:
            with self.engine.connect() as conn:
                return bool(conn.scalar(text("SELECT 1")) == 1)

        return await asyncio.get_running_loop().run_in_executor(self._pool, select_one)

    async def dispose(self) -> None:
        """Finish the queued writes, stop the threads and close every pooled connection."""
        if self._writer is not None:
            await asyncio.to_thread(self._writer.stop)
        # Waiting lets a unit still running give its connection back before the pool closes.
        await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)
        await asyncio.to_thread(self.engine.dispose)


def _done(value: T) -> asyncio.Future[T]:
    future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future


_STOP = object()


@dataclass(slots=True)
class _Unit:
    """One write waiting in the group writer's queue, and where its answer goes."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    work: Work[Any]
    durable: bool
    ok: bool = False
    value: Any = None


class _GroupWriter:
    """The single SQLite writer: one thread, one connection, one commit per group of units."""

    def __init__(self, engine: Engine, max_group: int, memo: dict[str, Any]) -> None:
        self._engine = engine.execution_options(**{WRITE_OPTION: True})
        self._memo = memo
        self._max_group = max(1, max_group)
        self._queue: queue.SimpleQueue[_Unit | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._conn: Connection | None = None
        self._durable = True  # the connection's synchronous setting (FULL when it connects)

    def submit(self, work: Work[T], durable: bool) -> asyncio.Future[T]:
        """Queue ``work``; the future resolves after the commit of the group that ran it, which
        is flushed to disk first if any unit of the group is ``durable``."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._ensure_started()
        self._queue.put(_Unit(loop, future, work, durable))
        return future

    def stop(self) -> None:
        """Run what is queued, then end the thread and close its connection (blocking)."""
        with self._start_lock:
            thread = self._thread
        if thread is not None:
            self._queue.put(_STOP)
            thread.join()

    def _ensure_started(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name="evalmesh-db-writer", daemon=True
                )
                self._thread.start()

    def _serve(self) -> None:
        stopping = False
        while not stopping:
            batch: list[_Unit] = []
            item = self._queue.get()
            while item is not _STOP:
                assert isinstance(item, _Unit)
                batch.append(item)
                if len(batch) >= self._max_group:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            stopping = item is _STOP
            if batch:
                self._run_group(batch)
                _deliver(batch)
        self._close()

    def _run_group(self, batch: list[_Unit]) -> None:
        try:
            conn = self._connection()
            durable = any(unit.durable for unit in batch)
            if durable is not self._durable:
                # On the driver's connection: outside any transaction, as SQLite requires.
                conn.connection.driver_connection.execute(_SQLITE_SYNC[durable])  # type: ignore[union-attr]
                self._durable = durable
            with conn.begin():
                if len(batch) == 1:
                    unit = batch[0]
                    unit.value, unit.ok = unit.work(Tx(conn, False, self._memo)), True
                else:
                    for unit in batch:
                        _run_in_savepoint(conn, unit, self._memo)
        except Exception as error:  # BEGIN, COMMIT or a lone unit failed: nothing was written
            for unit in batch:
                if unit.ok or unit.value is None:
                    unit.ok, unit.value = False, error
            self._discard_if_broken(error)

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            self._conn = self._engine.connect()
            self._durable = True
        return self._conn

    def _discard_if_broken(self, error: Exception) -> None:
        conn = self._conn
        if conn is None:
            return
        if isinstance(error, sa_exc.DBAPIError) and not isinstance(error, sa_exc.IntegrityError):
            self._close()

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # the connection is going away either way
                logger.debug("closing the writer connection failed", exc_info=True)


def _run_in_savepoint(conn: Connection, unit: _Unit, memo: dict[str, Any]) -> None:
    _execute(conn, "SAVEPOINT unit")
    try:
        value = unit.work(Tx(conn, False, memo))
    except Exception as error:
        _execute(conn, "ROLLBACK TO unit")
        _execute(conn, "RELEASE unit")
        unit.value = error
        return
    _execute(conn, "RELEASE unit")
    unit.value, unit.ok = value, True


def _execute(conn: Connection, statement: str) -> None:
    """Run a transaction-control statement on the SQLite driver's own connection.

    Through SQLAlchemy's nested transaction a unit's savepoint cost about 70 µs of CPU in
    Python, more than a small unit's own statements.
    A failure is raised as SQLAlchemy would raise it, so retries and the writer's discarding of
    a broken connection tell it apart the same way.
    """
    driver = conn.connection.driver_connection
    assert isinstance(driver, sqlite3.Connection)
    try:
        driver.execute(statement)
    except sqlite3.Error as error:
        raise sa_exc.DBAPIError.instance(
            statement, None, error, sqlite3.Error, dialect=conn.dialect
        ) from error


def _deliver(batch: list[_Unit]) -> None:
    """Answer every unit of a committed (or failed) group, one loop wake-up per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Unit]] = {}
    for unit in batch:
        by_loop.setdefault(unit.loop, []).append(unit)
    for loop, units in by_loop.items():
        # A closed loop raises RuntimeError: nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_resolve, units)


def _resolve(units: list[_Unit]) -> None:
    for unit in units:
        if unit.future.done():
            continue
        if unit.ok:
            unit.future.set_result(unit.value)
        else:
            unit.future.set_exception(unit.value)
