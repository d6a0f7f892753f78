"""Create the first admin API key directly in storage, the one trusted step of a local start."""

from __future__ import annotations

from evalmesh_deploy.admin_key import FIRST_TENANT
from evalmesh_deploy.admin_key import create_admin_key as _create_admin_key

__all__ = ["FIRST_TENANT", "create_admin_key"]


def create_admin_key(storage_address: str) -> str:
    """Store a new admin key for the first tenant and return its secret (shown only now)."""
    return _create_admin_key(storage_address, display_name="first admin key, made by scripts/up")
