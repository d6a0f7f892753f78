"""Create an admin API key directly in storage: the one trusted step of a new installation."""

from __future__ import annotations

import grpc

from evalmesh.storage.v1 import storage_service_pb2, storage_service_pb2_grpc
from evalmesh.v1 import api_key_pb2

__all__ = ["FIRST_TENANT", "create_admin_key"]

FIRST_TENANT = "default"


def create_admin_key(
    storage_address: str,
    display_name: str = "first admin key",
    tenant: str = FIRST_TENANT,
    timeout: float = 10.0,
) -> str:
    """Store a new admin key for ``tenant`` and return its secret (shown only now)."""
    request = storage_service_pb2.CreateApiKeyRequest(
        tenant=tenant, role=api_key_pb2.ROLE_ADMIN, display_name=display_name
    )
    with grpc.insecure_channel(storage_address) as channel:
        stub = storage_service_pb2_grpc.StorageServiceStub(channel)
        reply: storage_service_pb2.CreateApiKeyResponse = stub.CreateApiKey(
            request, timeout=timeout, wait_for_ready=True
        )
    return reply.secret
