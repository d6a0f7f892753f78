"""Shared server plumbing for evalmesh services.

Config from the environment, JSON logs, domain errors and their one gRPC mapping, and the
grpc.aio server bootstrap (health, reflection, dependency probes, signals, ordered shutdown).
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
from evalmesh_common.health import Probe
from evalmesh_common.health_client import HealthProbe, health_probe, is_serving, wait_for_serving
from evalmesh_common.interceptor import ErrorInterceptor
from evalmesh_common.logging import configure_logging
from evalmesh_common.redact import redact_url
from evalmesh_common.runner import ServiceConfig, run
from evalmesh_common.server import ServiceApp
from evalmesh_common.server_config import ServerConfig
from evalmesh_common.shutdown import Hook, Phase
from evalmesh_common.status import abort_with, error_from_rpc, to_rpc_status

__all__ = [
    "DOMAIN",
    "Aborted",
    "AlreadyExists",
    "Cancelled",
    "ConfigError",
    "DeadlineExceeded",
    "DomainError",
    "ErrorInterceptor",
    "FailedPrecondition",
    "FieldViolation",
    "HealthProbe",
    "Hook",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "Phase",
    "Probe",
    "ResourceExhausted",
    "Seconds",
    "Secret",
    "ServerConfig",
    "ServiceApp",
    "ServiceConfig",
    "Unauthenticated",
    "Unavailable",
    "abort_with",
    "configure_logging",
    "describe",
    "env_field",
    "env_group",
    "error_from_rpc",
    "health_probe",
    "is_serving",
    "load_config",
    "redact_url",
    "run",
    "to_rpc_status",
    "wait_for_serving",
]
