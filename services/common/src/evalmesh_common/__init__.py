"""The core of evalmesh's shared library: pure Python that any module may import.

Config from the environment, domain errors as values, backoff, the evaluation lifecycle, the
priority policy and the NATS names. Nothing here imports grpc, NATS or Prometheus, so a domain
module that uses it stays free of transport code. Two layers sit on top and import the core, never
the other way round: :mod:`evalmesh_common.messaging` (the NATS connection) and
:mod:`evalmesh_common.server` (the gRPC server: bootstrap, health, interceptors, status mapping,
metrics, TLS). ``docs/architecture.md`` draws the layers; ``tests/test_package_layers.py`` holds
the code to them.
"""

from evalmesh_common.config import (
    ConfigError,
    Seconds,
    Secret,
    describe,
    env_field,
    env_group,
    load_config,
)
from evalmesh_common.errors import (
    DOMAIN,
    Aborted,
    AlreadyExists,
    Cancelled,
    DeadlineExceeded,
    DomainError,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from evalmesh_common.redact import redact_url

__all__ = [
    "DOMAIN",
    "Aborted",
    "AlreadyExists",
    "Cancelled",
    "ConfigError",
    "DeadlineExceeded",
    "DomainError",
    "FailedPrecondition",
    "FieldViolation",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Seconds",
    "Secret",
    "Unauthenticated",
    "Unavailable",
    "describe",
    "env_field",
    "env_group",
    "load_config",
    "redact_url",
]
