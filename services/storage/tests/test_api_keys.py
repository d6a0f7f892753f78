"""API keys: the secret is shown once, only its hash is stored, revocation is immediate."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select

from evalmesh_storage.db import Database, Tx
from evalmesh_storage.domain import Role
from evalmesh_storage.errors import ApiKeyNotFound, InvalidApiKey, InvalidPageToken
from evalmesh_storage.models import api_keys
from evalmesh_storage.storage import Storage


async def test_a_created_key_authenticates_with_its_tenant_and_role(storage: Storage) -> None:
    created = await storage.create_api_key("acme", Role.ADMIN, "ops laptop")
    assert created.secret.startswith("em_")
    assert len(created.secret) == 3 + 43
    assert created.key.prefix == created.secret[:11]
    found = await storage.authenticate_api_key(created.secret)
    assert (found.id, found.tenant, found.role) == (created.key.id, "acme", Role.ADMIN)


async def test_only_the_hash_of_the_secret_is_stored(storage: Storage, db: Database) -> None:
    created = await storage.create_api_key("acme", Role.USER, "ci")

    def rows(tx: Tx) -> list[tuple[object, ...]]:
        return [tuple(row) for row in tx.conn.execute(select(api_keys))]

    stored = await db.read(rows)
    assert len(stored) == 1
    assert created.secret not in repr(stored)
    assert created.secret[11:] not in repr(stored)
    assert hashlib.sha256(created.secret.encode()).hexdigest() in stored[0]


async def test_unknown_malformed_and_revoked_secrets_are_refused_alike(storage: Storage) -> None:
    created = await storage.create_api_key("acme", Role.USER, "")
    revoked = await storage.revoke_api_key(created.key.id)
    assert revoked.revoke_time is not None
    again = await storage.revoke_api_key(created.key.id)
    assert again.revoke_time == revoked.revoke_time
    for secret in (created.secret, "em_unknown", "not-a-key", ""):
        with pytest.raises(InvalidApiKey) as refused:
            await storage.authenticate_api_key(secret)
        assert refused.value.reason == "INVALID_API_KEY"
    with pytest.raises(ApiKeyNotFound):
        await storage.revoke_api_key("key_missing")


async def test_keys_are_listed_newest_first_by_tenant_with_revoked_on_request(
    storage: Storage,
) -> None:
    made = [await storage.create_api_key(t, Role.USER, f"k{i}") for i, t in enumerate("aabab")]
    await storage.revoke_api_key(made[0].key.id)
    page = await storage.list_api_keys("a", False, 0, "")
    assert [k.display_name for k in page.items] == ["k3", "k1"]
    everything = await storage.list_api_keys("a", True, 0, "")
    assert [k.display_name for k in everything.items] == ["k3", "k1", "k0"]
    names, token = [], ""
    while True:
        page = await storage.list_api_keys("", True, 2, token)
        names += [k.display_name for k in page.items]
        token = page.next_page_token
        if not token:
            break
    assert names == ["k4", "k3", "k2", "k1", "k0"]
    first = await storage.list_api_keys("", True, 2, "")
    with pytest.raises(InvalidPageToken):
        await storage.list_api_keys("a", True, 2, first.next_page_token)
