"""Authenticate the bearer API key of a call; the tenant and role come from the key alone.

Storage holds only the keys' hashes, and asking it on every call was one storage round trip per
RPC. The gateway keeps what storage answered (valid or not) for a short time, keyed by the
secret's hash, and asks once for many concurrent calls with the same key. Revocation still takes
effect at once: the gateway that revokes a key drops it and tells every other gateway over NATS.
A gateway that was cut off from NATS may have missed such a message, so it forgets everything on
reconnecting; the time limit bounds what a lost message can cost otherwise.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
from collections.abc import Iterable

import grpc
from nats.aio.client import Client
from nats.aio.msg import Msg

from evalmesh.storage.v1 import storage_service_pb2, storage_service_pb2_grpc
from evalmesh.v1 import api_key_pb2
from evalmesh_common import DomainError, PermissionDenied, Unauthenticated
from evalmesh_common.server import error_from_rpc
from evalmesh_common.subjects import KEY_REVOKED_SUBJECT

__all__ = ["Authenticator", "Principal"]

logger = logging.getLogger(__name__)

_BEARER = "bearer "
# One message for every failure, so a caller cannot tell a revoked key from an unknown one.
_UNAUTHENTICATED = "a valid API key is required: send 'authorization: Bearer <key>'"
_MAX_CACHED = 10_000


@dataclasses.dataclass(frozen=True)
class Principal:
    """Principal is who is calling: the key's tenant and role."""

    tenant: str
    role: api_key_pb2.Role.ValueType
    key_id: str

    @property
    def is_admin(self) -> bool:
        """True for admin keys."""
        return self.role == api_key_pb2.ROLE_ADMIN

    def require_admin(self) -> None:
        """Raise PermissionDenied unless the key is an admin key."""
        if not self.is_admin:
            raise PermissionDenied("this call needs an admin API key", reason="ADMIN_REQUIRED")


def _bearer(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    values = [value for key, value in metadata or () if key == "authorization"]
    if len(values) != 1 or not isinstance(values[0], str):
        raise Unauthenticated(_UNAUTHENTICATED, reason="API_KEY_MISSING")
    header = values[0]
    if not header.lower().startswith(_BEARER) or not header[len(_BEARER) :].strip():
        raise Unauthenticated(_UNAUTHENTICATED, reason="API_KEY_MALFORMED")
    return header[len(_BEARER) :].strip()


@dataclasses.dataclass
class _Entry:
    """What storage said of one secret: a principal, None for "not a valid key", or pending."""

    expires: float
    answer: asyncio.Future[Principal | None]


class Authenticator:
    """Looks keys up in storage, which holds only their hashes, and remembers the answers."""

    def __init__(
        self, storage: storage_service_pb2_grpc.StorageServiceAsyncStub, ttl: float = 10.0
    ) -> None:
        self._storage = storage
        self._ttl = ttl
        self._entries: dict[bytes, _Entry] = {}
        self._nats: Client | None = None

    async def authenticate(self, context: grpc.aio.ServicerContext[object, object]) -> Principal:
        """Return the caller's principal, or raise Unauthenticated."""
        secret = _bearer(context.invocation_metadata())
        if len(secret) > 256:
            raise Unauthenticated(_UNAUTHENTICATED, reason="API_KEY_MALFORMED")
        principal = await self._lookup(secret)
        if principal is None:
            raise Unauthenticated(_UNAUTHENTICATED, reason="API_KEY_INVALID")
        return principal

    async def _lookup(self, secret: str) -> Principal | None:
        digest = hashlib.sha256(secret.encode()).digest()
        now = time.monotonic()
        entry = self._entries.get(digest)
        if entry is None or entry.expires <= now:
            # A task of its own: a caller that goes away does not cancel the others' answer.
            entry = _Entry(now + self._ttl, asyncio.ensure_future(self._ask(secret)))
            self._remember(digest, entry)
            entry.answer.add_done_callback(lambda _: self._settled(digest, entry))
        return await asyncio.shield(entry.answer)

    def _settled(self, digest: bytes, entry: _Entry) -> None:
        """Keep answers only: an outage (or a cancelled lookup) is asked again next time."""
        if _answered(entry.answer):
            return
        if self._entries.get(digest) is entry:
            del self._entries[digest]

    def _remember(self, digest: bytes, entry: _Entry) -> None:
        if len(self._entries) >= _MAX_CACHED:
            now = time.monotonic()
            self._entries = {k: e for k, e in self._entries.items() if e.expires > now}
            if len(self._entries) >= _MAX_CACHED:
                self._entries.clear()
        self._entries[digest] = entry

    async def _ask(self, secret: str) -> Principal | None:
        request = storage_service_pb2.AuthenticateApiKeyRequest(secret=secret)
        try:
            reply = await self._storage.AuthenticateApiKey(request, timeout=5)
        except grpc.aio.AioRpcError as error:
            domain: DomainError = error_from_rpc(error)
            if isinstance(domain, Unauthenticated):
                return None
            raise domain from None
        key = reply.api_key
        return Principal(tenant=key.tenant, role=key.role, key_id=key.id)

    async def listen(self, client: Client, reconnected: bool) -> None:
        """Follow revocations on NATS (call on every connection; see NatsConnection.on_connect)."""
        if reconnected:
            self._entries.clear()  # a revocation may have been sent while we were away
            return
        self._nats = client
        await client.subscribe(KEY_REVOKED_SUBJECT, cb=self._on_revoked)

    async def revoked(self, key_id: str) -> None:
        """Forget ``key_id`` here at once and tell every other gateway to forget it."""
        self._forget(key_id)
        if self._nats is None or not self._nats.is_connected:
            logger.warning("revocation of %s not broadcast: NATS is not connected", key_id)
            return
        try:
            await self._nats.publish(KEY_REVOKED_SUBJECT, key_id.encode())
            await self._nats.flush(timeout=2)
        except Exception as error:  # the other gateways forget it within the time limit
            logger.warning("revocation of %s not broadcast: %s", key_id, error)

    async def _on_revoked(self, message: Msg) -> None:
        self._forget(message.data.decode(errors="replace"))

    def _forget(self, key_id: str) -> None:
        for digest, entry in list(self._entries.items()):
            answer = entry.answer
            if _answered(answer) and getattr(answer.result(), "key_id", None) == key_id:
                del self._entries[digest]


def _answered(answer: asyncio.Future[Principal | None]) -> bool:
    """True once storage answered (valid or not), False while pending or after a failure."""
    return answer.done() and not answer.cancelled() and answer.exception() is None
