"""Settings every gRPC server shares, loadable from the environment or built in code.

A service embeds them with ``server: ServerConfig = env_group(ServerConfig)``. The variables
are the same in every service (each process has its own environment), so compose files and
Kubernetes manifests read alike.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from evalmesh_common.config import Seconds, env_field, env_group
from evalmesh_common.server.tls import ServerTls
from evalmesh_common.server.tracing import TracingConfig

__all__ = ["MIB", "ServerConfig"]

MIB = 1024 * 1024
_MAX_PORT = 65535


@dataclass(frozen=True)
class ServerConfig:
    """How a service's gRPC server listens, limits, keeps connections alive and shuts down,
    and where its metrics are served."""

    listen_address: str = env_field("EVALMESH_LISTEN_ADDRESS", default="127.0.0.1:0")
    # Where to write the bound port once listening, so a port-0 server can be found.
    port_file: str | None = env_field("EVALMESH_PORT_FILE", default=None)
    log_level: str = env_field("EVALMESH_LOG_LEVEL", default="INFO")
    # Serve Prometheus metrics over HTTP at /metrics on this port, on the gRPC listener's host.
    # Unset: no metrics listener. 0: a free port, written to metrics_port_file.
    metrics_port: int | None = env_field("EVALMESH_METRICS_PORT", default=None)
    metrics_port_file: str | None = env_field("EVALMESH_METRICS_PORT_FILE", default=None)
    # In-flight RPCs get this long to finish after SIGTERM before they are cancelled.
    shutdown_grace: Seconds = env_field("EVALMESH_SHUTDOWN_GRACE", default=Seconds(10.0))
    # Pause between NOT_SERVING and closing the listener, so load balancers route away first.
    shutdown_delay: Seconds = env_field("EVALMESH_SHUTDOWN_DELAY", default=Seconds(0.0))
    hook_timeout: Seconds = env_field("EVALMESH_SHUTDOWN_HOOK_TIMEOUT", default=Seconds(10.0))
    probe_interval: Seconds = env_field("EVALMESH_PROBE_INTERVAL", default=Seconds(1.0))
    probe_timeout: Seconds = env_field("EVALMESH_PROBE_TIMEOUT", default=Seconds(1.0))
    max_receive_message_bytes: int = env_field(
        "EVALMESH_MAX_RECEIVE_MESSAGE_BYTES", default=4 * MIB
    )
    max_send_message_bytes: int = env_field("EVALMESH_MAX_SEND_MESSAGE_BYTES", default=4 * MIB)
    # Per HTTP/2 connection. Services multiplex all their calls to a peer over one channel, so an
    # internal server needs room; the public gateway caps it much lower (one client, one budget).
    max_concurrent_streams: int = env_field("EVALMESH_MAX_CONCURRENT_STREAMS", default=1000)
    # Beyond this many concurrent RPCs new ones fail fast with RESOURCE_EXHAUSTED.
    maximum_concurrent_rpcs: int | None = env_field("EVALMESH_MAX_CONCURRENT_RPCS", default=None)
    # The server pings idle connections this often to find dead peers of long streams.
    keepalive_time: Seconds = env_field("EVALMESH_KEEPALIVE_TIME", default=Seconds(30.0))
    keepalive_timeout: Seconds = env_field("EVALMESH_KEEPALIVE_TIMEOUT", default=Seconds(10.0))
    # Clients pinging more often than this are sent GOAWAY (too_many_pings).
    min_client_ping_interval: Seconds = env_field(
        "EVALMESH_MIN_CLIENT_PING_INTERVAL", default=Seconds(10.0)
    )
    # TLS (and mutual TLS) on the listener; see evalmesh_common.server.tls.
    tls: ServerTls = env_group(ServerTls)
    # OpenTelemetry traces (the standard OTEL_* variables); off unless an endpoint is set.
    tracing: TracingConfig = env_group(TracingConfig)

    def __post_init__(self) -> None:
        if not isinstance(logging.getLevelName(self.log_level.upper()), int):
            raise ValueError(f"log_level {self.log_level!r} is not a logging level")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= _MAX_PORT:
            raise ValueError(f"metrics_port must be unset or between 0 and {_MAX_PORT}")
        for name in ("shutdown_grace", "shutdown_delay", "hook_timeout", "keepalive_timeout"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        for name in ("probe_interval", "probe_timeout", "keepalive_time"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")

    def grpc_options(self) -> list[tuple[str, int]]:
        """Return the channel arguments for ``grpc.aio.server(options=...)``."""
        return [
            ("grpc.max_receive_message_length", self.max_receive_message_bytes),
            ("grpc.max_send_message_length", self.max_send_message_bytes),
            ("grpc.max_concurrent_streams", self.max_concurrent_streams),
            ("grpc.keepalive_time_ms", _ms(self.keepalive_time)),
            ("grpc.keepalive_timeout_ms", _ms(self.keepalive_timeout)),
            ("grpc.keepalive_permit_without_calls", 1),
            # gRPC core's name for the *receive* side policy (GRPC_ARG_HTTP2_MIN_RECV_PING_...).
            ("grpc.http2.min_ping_interval_without_data_ms", _ms(self.min_client_ping_interval)),
            ("grpc.http2.max_pings_without_data", 0),
            # Two instances on one fixed port must fail loudly, not split the traffic.
            ("grpc.so_reuseport", 0),
        ]


def _ms(seconds: float) -> int:
    return round(seconds * 1000)
