"""Fixtures: every storage test runs against SQLite in a temp dir and a throwaway PostgreSQL.

``postgres_cluster`` (session) runs a private PostgreSQL 15 with initdb + pg_ctl on a free port;
without the binaries the PostgreSQL half of the suite is skipped with the reason. Each test gets
a freshly migrated SQLite file, or the session's migrated PostgreSQL database with its tables
emptied. The cluster and the service process come from the test-support package
(``evalmesh_testing``), which cross-service tests use too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from evalmesh_storage.db import Database, DatabaseSettings, create_engine
from evalmesh_storage.migrate import migrate
from evalmesh_storage.retry import RetryPolicy
from evalmesh_storage.storage import Storage
from evalmesh_storage.tokens import PageTokens
from evalmesh_testing.postgres import PostgresCluster, find_postgres_bin
from evalmesh_testing.servers import StorageProcess

BACKENDS = ("sqlite", "postgresql")
TOKEN_SECRET = b"storage-tests-page-token-secret!"
# Short, so an outage test answers UNAVAILABLE quickly; long enough for SQLite lock waits.
TEST_RETRY = RetryPolicy(budget=1.0, initial_backoff=0.02, max_backoff=0.2)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster for the whole session, stopped and deleted at the end."""
    if find_postgres_bin() is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) are not installed")
    with PostgresCluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """A database in the session cluster, migrated once by the first test that uses it."""
    return postgres_cluster.create_database("storage_tests")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The backend under test: each test using it runs once per backend."""
    return str(request.param)


@pytest.fixture
def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """An empty-or-reusable database URL for ``backend``."""
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'storage.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[Engine]:
    """A migrated engine whose tables are empty."""
    engine = create_engine(DatabaseSettings(url=database_url, pool_size=5, max_overflow=25))
    try:
        await migrate(engine)
        if engine.dialect.name == "postgresql":
            with engine.begin() as conn:
                conn.execute(
                    text("TRUNCATE evaluations, evaluation_labels, output_chunks, api_keys")
                )
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
async def db(engine: Engine) -> AsyncIterator[Database]:
    """Retried transactions over the test engine (one writer thread on SQLite)."""
    database = Database(engine, TEST_RETRY, threads=8)
    yield database
    await database.dispose()


@pytest.fixture
def storage(db: Database) -> Storage:
    """The storage domain facade, as the servicer uses it."""
    return Storage(db, PageTokens(TOKEN_SECRET))


@pytest.fixture
def storage_process(tmp_path: Path) -> Iterator[StorageProcess]:
    """``python -m evalmesh_storage`` on SQLite in a temp dir, listening; stopped afterwards."""
    process = StorageProcess(f"sqlite+aiosqlite:///{tmp_path / 'db' / 'storage.db'}", tmp_path)
    process.start()
    try:
        yield process
    finally:
        process.stop()
