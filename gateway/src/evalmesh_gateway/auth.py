"""Authenticate the bearer API key of a call; the tenant and role come from the key alone."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import grpc

from evalmesh.storage.v1 import storage_service_pb2, storage_service_pb2_grpc
from evalmesh.v1 import api_key_pb2
from evalmesh_common import DomainError, PermissionDenied, Unauthenticated, error_from_rpc

__all__ = ["Authenticator", "Principal"]

_BEARER = "bearer "
# One message for every failure, so a caller cannot tell a revoked key from an unknown one.
_UNAUTHENTICATED = "a valid API key is required: send 'authorization: Bearer <key>'"


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


class Authenticator:
    """Looks keys up in storage, which holds only their hashes."""

    def __init__(self, storage: storage_service_pb2_grpc.StorageServiceAsyncStub) -> None:
        self._storage = storage

    async def authenticate(self, context: grpc.aio.ServicerContext[object, object]) -> Principal:
        """Return the caller's principal, or raise Unauthenticated."""
        secret = _bearer(context.invocation_metadata())
        if len(secret) > 256:
            raise Unauthenticated(_UNAUTHENTICATED, reason="API_KEY_MALFORMED")
        request = storage_service_pb2.AuthenticateApiKeyRequest(secret=secret)
        try:
            reply = await self._storage.AuthenticateApiKey(request, timeout=5)
        except grpc.aio.AioRpcError as error:
            domain: DomainError = error_from_rpc(error)
            if isinstance(domain, Unauthenticated):
                raise Unauthenticated(_UNAUTHENTICATED, reason="API_KEY_INVALID") from None
            raise domain from None
        key = reply.api_key
        return Principal(tenant=key.tenant, role=key.role, key_id=key.id)
