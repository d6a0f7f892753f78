"""API keys: ``em_`` + 32 random bytes (base64url), stored only as their SHA-256.

The secret is high-entropy, so one unsalted SHA-256 is enough to make the stored hash useless
to a reader of the database, and it allows lookup by hash through a unique index. The ``prefix``
(the first characters of the secret) lets people recognise a key without revealing it.
"""

from __future__ import annotations

import base64
import hashlib
import secrets

from sqlalchemy import Row, Select, and_, insert, or_, select, update

from evalmesh_common.ids import new_api_key_id
from evalmesh_storage.db import Tx
from evalmesh_storage.domain import ApiKey, CreatedApiKey, Page, Role
from evalmesh_storage.errors import ApiKeyNotFound, InvalidApiKey
from evalmesh_storage.models import api_keys
from evalmesh_storage.tokens import PageTokens
from evalmesh_storage.validation import check_page_size, check_text, require

__all__ = [
    "SECRET_PREFIX",
    "authenticate",
    "create_api_key",
    "hash_secret",
    "list_api_keys",
    "new_secret",
    "revoke_api_key",
]

SECRET_PREFIX = "em_"  # noqa: S105 - a public marker, not a password
_SHOWN = len(SECRET_PREFIX) + 8
_K = api_keys.c


def new_secret() -> str:
    """Return a fresh secret: ``em_`` and 32 random bytes, base64url without padding."""
    raw = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode("ascii")
    return f"{SECRET_PREFIX}{raw}"


def hash_secret(secret: str) -> str:
    """Return the hex SHA-256 of ``secret``, the only form in which it is stored."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def create_api_key(tx: Tx, tenant: str, role: Role, display_name: str) -> CreatedApiKey:
    """Store a new key for ``tenant`` and return it with its secret (shown this once)."""
    require("tenant", tenant, 64)
    check_text("display_name", display_name, 128)
    secret = new_secret()
    key = ApiKey(
        id=new_api_key_id(),
        tenant=tenant,
        role=role,
        display_name=display_name,
        prefix=secret[:_SHOWN],
        create_time=tx.now(),
        revoke_time=None,
    )
    tx.conn.execute(
        insert(api_keys).values(
            id=key.id,
            tenant=key.tenant,
            role=int(key.role),
            display_name=key.display_name,
            prefix=key.prefix,
            secret_hash=hash_secret(secret),
            create_time=key.create_time,
        )
    )
    return CreatedApiKey(key, secret)


def _select() -> Select[str, str, int, str, str, int, int | None]:
    return select(
        _K.id, _K.tenant, _K.role, _K.display_name, _K.prefix, _K.create_time, _K.revoke_time
    )


def _key(row: Row[str, str, int, str, str, int, int | None]) -> ApiKey:
    return ApiKey(row[0], row[1], Role(row[2]), row[3], row[4], row[5], row[6])


def list_api_keys(
    tx: Tx, tenant: str, include_revoked: bool, page_size: int, page_token: str, tokens: PageTokens
) -> Page[ApiKey]:
    """Page through keys, newest first; ``tenant`` empty lists every tenant's."""
    size = check_page_size(page_size)
    filters = {"include_revoked": include_revoked}
    query = _select().order_by(_K.create_time.desc(), _K.id.desc()).limit(size + 1)
    if tenant:
        query = query.where(_K.tenant == tenant)
    if not include_revoked:
        query = query.where(_K.revoke_time.is_(None))
    if page_token:
        created, last_id = tokens.parse(page_token, "api_keys", tenant, filters)
        query = query.where(
            or_(_K.create_time < created, and_(_K.create_time == created, _K.id < last_id))
        )
    found = [_key(row) for row in tx.conn.execute(query)]
    if len(found) <= size:
        return Page(found, "")
    last = found[size - 1]
    return Page(
        found[:size], tokens.issue("api_keys", tenant, filters, (last.create_time, last.id))
    )


def revoke_api_key(tx: Tx, key_id: str) -> ApiKey:
    """Revoke a key now; revoking a revoked key keeps its first revoke time."""
    check_text("id", key_id, 64)
    now = tx.now()
    tx.conn.execute(
        update(api_keys).where(_K.id == key_id, _K.revoke_time.is_(None)).values(revoke_time=now)
    )
    row = (tx.conn.execute(_select().where(_K.id == key_id))).first()
    if row is None:
        raise ApiKeyNotFound(f"API key {key_id!r} not found", metadata={"api_key": key_id})
    return _key(row)


def authenticate(tx: Tx, secret: str) -> ApiKey:
    """Return the valid key ``secret`` belongs to; unknown and revoked look the same."""
    if not secret.startswith(SECRET_PREFIX) or len(secret) > 256:
        raise InvalidApiKey("invalid API key")
    row = (tx.conn.execute(_select().where(_K.secret_hash == hash_secret(secret)))).first()
    if row is None or row.revoke_time is not None:
        raise InvalidApiKey("invalid API key")
    return _key(row)
