"""Create the first admin API key directly in storage, the one trusted step of a local start."""

from __future__ import annotations

import grpc

from evalmesh.storage.v1 import storage_service_pb2, storage_service_pb2_grpc
from evalmesh.v1 import api_key_pb2

__all__ = ["create_admin_key"]

FIRST_TENANT = "default"


def create_admin_key(storage_address: str) -> str:
    """Store a new admin key for the first tenant and return its secret (shown only now)."""
    request = storage_service_pb2.CreateApiKeyRequest(
        tenant=FIRST_TENANT,
        role=api_key_pb2.ROLE_ADMIN,
        display_name="first admin key, made by scripts/up",
    )
    with grpc.insecure_channel(storage_address) as channel:
        stub = storage_service_pb2_grpc.StorageServiceStub(channel)
        reply: storage_service_pb2.CreateApiKeyResponse = stub.CreateApiKey(request, timeout=10)
    return reply.secret
