"""Opaque, signed page tokens bound to a listing's scope (tenant) and filters.

A token is ``base64url(payload) "." base64url(hmac_sha256(secret, payload))``; the payload names
the listing kind, the scope, a hash of the filters and the keyset cursor (create time, id) of
the last item returned. A token altered, forged, or presented with another scope or other
filters is refused, so one tenant's token is useless to another. The secret comes from
configuration so tokens survive restarts and work across replicas.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from evalmesh_storage.errors import FieldViolation, InvalidPageToken

__all__ = ["PageTokens", "filter_hash"]

_FIELD = "page_token"


def filter_hash(filters: Mapping[str, Any]) -> str:
    """Return a short stable hash of JSON-able filter values (order-insensitive keys)."""
    canonical = json.dumps(filters, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


class PageTokens:
    """Issues and verifies page tokens with one HMAC secret."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the page token secret must be at least 16 bytes")
        self._secret = secret

    def issue(
        self, kind: str, scope: str, filters: Mapping[str, Any], cursor: tuple[int, str]
    ) -> str:
        """Return a token that resumes after ``cursor`` for the same kind, scope and filters."""
        payload = json.dumps(
            {"k": kind, "s": scope, "f": filter_hash(filters), "c": [cursor[0], cursor[1]]},
            separators=(",", ":"),
        ).encode()
        return f"{_b64(payload)}.{_b64(self._sign(payload))}"

    def parse(
        self, token: str, kind: str, scope: str, filters: Mapping[str, Any]
    ) -> tuple[int, str]:
        """Return the cursor in ``token``, or raise InvalidPageToken (INVALID_ARGUMENT)."""
        payload = self._verified(token)
        try:
            document = json.loads(payload)
            matches = (
                document["k"] == kind
                and document["s"] == scope
                and document["f"] == filter_hash(filters)
            )
            create_time, last_id = document["c"]
        except (ValueError, KeyError, TypeError):
            raise _refused("the page token is malformed") from None
        if not matches or not isinstance(create_time, int) or not isinstance(last_id, str):
            raise _refused("the page token belongs to another listing or other filters")
        return create_time, last_id

    def _verified(self, token: str) -> bytes:
        body, _, signature = token.partition(".")
        try:
            payload, mac = _unb64(body), _unb64(signature)
        except (binascii.Error, ValueError):
            raise _refused("the page token is malformed") from None
        if not hmac.compare_digest(mac, self._sign(payload)):
            raise _refused("the page token is not valid here")
        return payload

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()


def _refused(description: str) -> InvalidPageToken:
    return InvalidPageToken(description, [FieldViolation(_FIELD, description)])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not text.isascii():
        raise ValueError("not ascii")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
