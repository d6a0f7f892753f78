"""Requests and reply conversions of the cluster and API-key calls, shared by both clients."""

from __future__ import annotations

from evalmesh.client._cluster import ApiKey, CreatedApiKey, Executor, QueueStats, Role, Runtime
from evalmesh.v1 import api_key_service_pb2, cluster_service_pb2

__all__ = [
    "EXECUTORS",
    "QUEUE_STATS",
    "RUNTIMES",
    "create_key_request",
    "created_key",
    "executors",
    "list_keys_request",
    "queue_stats",
    "revoke_key_request",
    "runtimes",
]

QUEUE_STATS = cluster_service_pb2.GetQueueStatsRequest()
EXECUTORS = cluster_service_pb2.ListExecutorsRequest()
RUNTIMES = cluster_service_pb2.ListRuntimesRequest()
KEY_PAGE_SIZE = 200


def queue_stats(reply: cluster_service_pb2.GetQueueStatsResponse) -> QueueStats:
    """The queue snapshot of a GetQueueStats reply."""
    return QueueStats.from_proto(reply.stats)


def executors(reply: cluster_service_pb2.ListExecutorsResponse) -> list[Executor]:
    """The executors of a ListExecutors reply."""
    return [Executor.from_proto(item) for item in reply.executors]


def runtimes(reply: cluster_service_pb2.ListRuntimesResponse) -> list[Runtime]:
    """The runtimes of a ListRuntimes reply."""
    return [Runtime.from_proto(item) for item in reply.runtimes]


def create_key_request(
    tenant: str, role: Role | str, name: str
) -> api_key_service_pb2.CreateApiKeyRequest:
    """A CreateApiKeyRequest."""
    return api_key_service_pb2.CreateApiKeyRequest(
        tenant=tenant, role=Role.parse(role).to_proto(), display_name=name
    )


def created_key(reply: api_key_service_pb2.CreateApiKeyResponse) -> CreatedApiKey:
    """The key and secret of a CreateApiKey reply."""
    return CreatedApiKey(ApiKey.from_proto(reply.api_key), reply.secret)


def list_keys_request(tenant: str, include_revoked: bool) -> api_key_service_pb2.ListApiKeysRequest:
    """The first ListApiKeysRequest (page_token is set per page)."""
    return api_key_service_pb2.ListApiKeysRequest(
        page_size=KEY_PAGE_SIZE, tenant=tenant, include_revoked=include_revoked
    )


def revoke_key_request(key_id: str) -> api_key_service_pb2.RevokeApiKeyRequest:
    """A RevokeApiKeyRequest."""
    return api_key_service_pb2.RevokeApiKeyRequest(id=key_id)
