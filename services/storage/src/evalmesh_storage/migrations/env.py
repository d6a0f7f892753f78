"""Alembic environment: runs on the connection the service hands over in ``config.attributes``.

The service migrates itself on start (:func:`evalmesh_storage.migrate.migrate`); there is no
separate URL here, so Alembic never reads the environment on its own.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from evalmesh_storage.models import metadata


def run_migrations_online() -> None:
    """Run the pending revisions inside the caller's open transaction."""
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError("run migrations through evalmesh_storage.migrate, not the alembic CLI")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
