"""Requests and reply conversions of the cluster and API-key calls, shared by both clients."""

from __future__ import annotations

from datetime import timedelta

from google.protobuf import duration_pb2

from evalmesh.client._cluster import (
    ApiKey,
    CreatedApiKey,
    DeadLetter,
    Executor,
    QueueActivity,
    QueueStats,
    Role,
    Runtime,
)
from evalmesh.client._models import Evaluation
from evalmesh.client._units import Duration, parse_duration
from evalmesh.v1 import api_key_service_pb2, cluster_service_pb2

__all__ = [
    "EXECUTORS",
    "QUEUE_STATS",
    "RUNTIMES",
    "activity_request",
    "create_key_request",
    "created_key",
    "dead_letter",
    "dead_letters_request",
    "drain_request",
    "executors",
    "list_keys_request",
    "purge_request",
    "queue_activity",
    "queue_stats",
    "revoke_key_request",
    "runtimes",
]

QUEUE_STATS = cluster_service_pb2.GetQueueStatsRequest()
EXECUTORS = cluster_service_pb2.ListExecutorsRequest()
RUNTIMES = cluster_service_pb2.ListRuntimesRequest()
KEY_PAGE_SIZE = 200
DEAD_LETTER_PAGE_SIZE = 100


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


def _duration(value: Duration) -> duration_pb2.Duration:
    message = duration_pb2.Duration()
    message.FromTimedelta(timedelta(seconds=parse_duration(value)))
    return message


def dead_letters_request(page_size: int) -> cluster_service_pb2.ListDeadLettersRequest:
    """The first ListDeadLettersRequest (page_token is set per page)."""
    return cluster_service_pb2.ListDeadLettersRequest(page_size=page_size)


def dead_letter(reply: cluster_service_pb2.GetDeadLetterResponse) -> DeadLetter:
    """The dead letter, with its evaluation, of a GetDeadLetter reply."""
    evaluation = Evaluation.from_proto(reply.evaluation) if reply.HasField("evaluation") else None
    return DeadLetter.from_proto(reply.dead_letter, evaluation)


def drain_request(
    executor_id: str, grace: Duration | None
) -> cluster_service_pb2.DrainExecutorRequest:
    """A DrainExecutorRequest; ``grace`` None leaves the executor's own."""
    request = cluster_service_pb2.DrainExecutorRequest(id=executor_id)
    if grace is not None:
        request.grace.CopyFrom(_duration(grace))
    return request


def purge_request(older_than: Duration) -> cluster_service_pb2.PurgeEvaluationsRequest:
    """A PurgeEvaluationsRequest for evaluations that ended more than ``older_than`` ago."""
    return cluster_service_pb2.PurgeEvaluationsRequest(older_than=_duration(older_than))


def activity_request(window: Duration | None) -> cluster_service_pb2.GetQueueActivityRequest:
    """A GetQueueActivityRequest; ``window`` None means the server's default (one hour)."""
    request = cluster_service_pb2.GetQueueActivityRequest()
    if window is not None:
        request.window.CopyFrom(_duration(window))
    return request


def queue_activity(reply: cluster_service_pb2.GetQueueActivityResponse) -> QueueActivity:
    """The activity of a GetQueueActivity reply."""
    return QueueActivity.from_proto(reply.activity)
