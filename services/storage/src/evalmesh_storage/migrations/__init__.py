"""Alembic migrations of the storage schema, run by :func:`evalmesh_storage.migrate.migrate`."""
