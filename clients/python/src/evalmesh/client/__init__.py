"""The evalmesh client library: submit Python code, follow its output live, read the result.

    from evalmesh.client import Client

    with Client() as client:  # EVALMESH_ADDRESS / EVALMESH_API_KEY, or the local mesh
        evaluation = client.run("print('hello')")
        print(evaluation.state, evaluation.stdout)

:class:`AsyncClient` has the same API for asyncio. Failed calls raise :class:`EvalmeshError`
subclasses that carry the gRPC code, a stable reason and the invalid fields.
"""

from evalmesh.client._async import AsyncClient
from evalmesh.client._cluster import (
    ActivityBucket,
    ApiKey,
    CreatedApiKey,
    DeadLetter,
    Executor,
    PriorityQueue,
    PurgeResult,
    QueueActivity,
    QueueStats,
    Role,
    Runtime,
    WaitSummary,
)
from evalmesh.client._errors import (
    AbortedError,
    AlreadyExistsError,
    CancelledError,
    ConfigurationError,
    DeadlineExceededError,
    EvalmeshError,
    FailedPreconditionError,
    FieldViolation,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    UnauthenticatedError,
    UnavailableError,
    error_from_rpc,
)
from evalmesh.client._models import Cause, Evaluation, Fault, Priority, State, Stream
from evalmesh.client._requests import BatchProgress, Spec
from evalmesh.client._retry import RetryPolicy
from evalmesh.client._sync import Client
from evalmesh.client._target import Target, find_state_file, resolve_target
from evalmesh.client._text import OutputDecoder, decode_output
from evalmesh.client._units import format_bytes, format_seconds, parse_duration, parse_size
from evalmesh.client._watch import Output, Snapshot, WatchEvent

__all__ = [
    "AbortedError",
    "ActivityBucket",
    "AlreadyExistsError",
    "ApiKey",
    "AsyncClient",
    "BatchProgress",
    "CancelledError",
    "Cause",
    "Client",
    "ConfigurationError",
    "CreatedApiKey",
    "DeadLetter",
    "DeadlineExceededError",
    "EvalmeshError",
    "Evaluation",
    "Executor",
    "FailedPreconditionError",
    "Fault",
    "FieldViolation",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "Output",
    "OutputDecoder",
    "PermissionDeniedError",
    "Priority",
    "PriorityQueue",
    "PurgeResult",
    "QueueActivity",
    "QueueStats",
    "RateLimitedError",
    "RetryPolicy",
    "Role",
    "Runtime",
    "Snapshot",
    "Spec",
    "State",
    "Stream",
    "Target",
    "UnauthenticatedError",
    "UnavailableError",
    "WaitSummary",
    "WatchEvent",
    "decode_output",
    "error_from_rpc",
    "find_state_file",
    "format_bytes",
    "format_seconds",
    "parse_duration",
    "parse_size",
    "resolve_target",
]
