"""Schema migrations: run on start, match the models, refuse a schema from the future."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from evalmesh_storage.db import DatabaseSettings, create_engine
from evalmesh_storage.errors import SchemaAheadError, SchemaMismatchError
from evalmesh_storage.migrate import (
    check_at_head,
    current_revision,
    head_revision,
    migrate,
    prepare_schema,
)
from evalmesh_storage.models import metadata
from evalmesh_testing.postgres import PostgresCluster


@pytest.fixture
async def empty_engine(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Engine]:
    """An engine on a database nothing has touched yet."""
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'fresh' / 'storage.db'}"
    else:
        cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
        url = cluster.create_database()
    engine = create_engine(DatabaseSettings(url=url))
    yield engine
    engine.dispose()


async def test_a_fresh_database_is_migrated_to_head_and_a_rerun_changes_nothing(
    empty_engine: Engine,
) -> None:
    assert await current_revision(empty_engine) is None
    assert await migrate(empty_engine) == head_revision()
    assert await migrate(empty_engine) == head_revision()
    assert await check_at_head(empty_engine) == head_revision()


async def test_the_migrated_schema_matches_the_models(empty_engine: Engine) -> None:
    await migrate(empty_engine)

    def differences(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    with empty_engine.connect() as conn:
        assert differences(conn) == []


async def test_a_schema_newer_than_the_code_is_refused_with_a_clear_error(
    empty_engine: Engine,
) -> None:
    await migrate(empty_engine)
    with empty_engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    with pytest.raises(SchemaAheadError, match=r"9999_future.*refusing to serve"):
        await migrate(empty_engine)
    with pytest.raises(SchemaMismatchError):
        await prepare_schema(empty_engine, upgrade=False, patience=0)


async def test_serving_without_migrating_refuses_an_unmigrated_database(
    empty_engine: Engine,
) -> None:
    with pytest.raises(SchemaMismatchError, match="EVALMESH_DATABASE_MIGRATE"):
        await prepare_schema(empty_engine, upgrade=False, patience=0)


async def test_sqlite_runs_in_wal_mode_with_foreign_keys_and_a_busy_timeout(
    tmp_path: Path,
) -> None:
    engine = create_engine(
        DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 's.db'}", busy_timeout=2.5)
    )
    try:
        with engine.connect() as conn:
            pragmas = [
                conn.execute(text(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "foreign_keys", "busy_timeout")
            ]
        assert pragmas == ["wal", 1, 2500]
    finally:
        engine.dispose()


def test_an_in_memory_sqlite_database_is_refused() -> None:
    with pytest.raises(ValueError, match="file path"):
        create_engine(DatabaseSettings(url="sqlite+aiosqlite:///:memory:"))
