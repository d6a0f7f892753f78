"""Bring the database schema to this code's head revision, or refuse a schema from the future.

Runs in one transaction (PostgreSQL and SQLite both have transactional DDL). On PostgreSQL an
advisory lock serialises replicas that start together; on SQLite ``BEGIN IMMEDIATE`` does.
"""

from __future__ import annotations

import asyncio
import logging
import time

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from evalmesh_storage.db import WRITE_OPTION
from evalmesh_storage.errors import SchemaAheadError, SchemaMismatchError
from evalmesh_storage.retry import is_transient

__all__ = [
    "check_at_head",
    "current_revision",
    "head_revision",
    "migrate",
    "prepare_schema",
]

logger = logging.getLogger(__name__)

_SCRIPT_LOCATION = "evalmesh_storage:migrations"
# An arbitrary 64-bit key naming "evalmesh storage migrations" among advisory locks.
_LOCK_KEY = 0x65766D5F6D696772


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", _SCRIPT_LOCATION)
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """Return the newest revision this code ships."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    if head is None:
        raise RuntimeError("no migrations are packaged")
    return head


async def current_revision(engine: Engine) -> str | None:
    """Return the revision the database is at, or None for an empty database."""

    def read() -> str | None:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    return await asyncio.to_thread(read)


async def migrate(engine: Engine) -> str:
    """Upgrade to the head revision and return it; raise SchemaAheadError if the DB is newer."""

    def upgrade() -> str:
        with engine.execution_options(**{WRITE_OPTION: True}).begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
            return _upgrade(conn)

    return await asyncio.to_thread(upgrade)


def _upgrade(connection: Connection) -> str:
    config = _config(connection)
    script = ScriptDirectory.from_config(config)
    known = {revision.revision for revision in script.walk_revisions()}
    current = MigrationContext.configure(connection).get_current_heads()
    unknown = sorted(set(current) - known)
    if unknown:
        raise SchemaAheadError(
            f"the database schema is at revision {', '.join(unknown)}, which this version of "
            f"evalmesh-storage does not know (its newest is {script.get_current_head()}); "
            "refusing to serve: run a newer evalmesh-storage or restore a matching database"
        )
    command.upgrade(config, "head")
    head = script.get_current_head() or ""
    if tuple(current) != (head,):
        logger.info("database schema migrated", extra={"from": list(current), "to": head})
    return head


async def check_at_head(engine: Engine) -> str:
    """Refuse to serve unless the database is exactly at this code's head revision."""
    current = await current_revision(engine)
    head = head_revision()
    if current != head:
        raise SchemaMismatchError(
            f"the database schema is at revision {current or 'none'} but this evalmesh-storage "
            f"needs {head}; run the migration (EVALMESH_DATABASE_MIGRATE=true) first"
        )
    return head


async def prepare_schema(engine: Engine, *, upgrade: bool, patience: float) -> str:
    """Migrate (or check) the schema, waiting up to ``patience`` s for the database to answer.

    A schema from the future fails at once: waiting cannot fix it.
    """
    deadline = time.monotonic() + patience
    attempt = 0
    while True:
        attempt += 1
        try:
            return await (migrate(engine) if upgrade else check_at_head(engine))
        except Exception as error:
            if not is_transient(error) or time.monotonic() >= deadline:
                raise
            logger.warning("database not reachable yet (try %d); waiting", attempt)
            await asyncio.sleep(min(1.0, 0.1 * attempt))
