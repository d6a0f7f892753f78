"""The server layer: everything around a service's grpc.aio server, built on the core.

Bootstrap and ordered shutdown (:class:`ServiceApp`, :func:`run`), probe-driven health, the error
and call-metrics interceptors, the one mapping between domain errors and gRPC statuses, the
Prometheus registry and listener, TLS for the server and its upstream channels, and JSON logs.
Importing this package loads grpc and prometheus_client; domain modules import the core
(:mod:`evalmesh_common`) instead.
"""

from evalmesh_common.server.app import AddServicers, ServiceApp
from evalmesh_common.server.config import ServerConfig
from evalmesh_common.server.health import Probe
from evalmesh_common.server.health_client import (
    HealthProbe,
    health_probe,
    is_serving,
    wait_for_serving,
)
from evalmesh_common.server.interceptor import ErrorInterceptor
from evalmesh_common.server.logging import configure_logging
from evalmesh_common.server.runner import ServiceConfig, run
from evalmesh_common.server.shutdown import Hook, Phase
from evalmesh_common.server.status import abort_with, error_from_rpc, to_rpc_status

__all__ = [
    "AddServicers",
    "ErrorInterceptor",
    "HealthProbe",
    "Hook",
    "Phase",
    "Probe",
    "ServerConfig",
    "ServiceApp",
    "ServiceConfig",
    "abort_with",
    "configure_logging",
    "error_from_rpc",
    "health_probe",
    "is_serving",
    "run",
    "to_rpc_status",
    "wait_for_serving",
]
