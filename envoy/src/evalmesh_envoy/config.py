"""Build evalmesh's Envoy bootstrap as typed envoy-data-plane objects and render it to YAML."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any as AnyValue

import yaml
from envoy_data_plane.envoy.config.bootstrap.v3 import Admin, Bootstrap, BootstrapStaticResources
from envoy_data_plane.envoy.config.cluster.v3 import Cluster, ClusterDiscoveryType
from envoy_data_plane.envoy.config.core.v3 import (
    Address,
    Http2ProtocolOptions,
    SocketAddress,
)
from envoy_data_plane.envoy.config.endpoint.v3 import (
    ClusterLoadAssignment,
    Endpoint,
    LbEndpoint,
    LocalityLbEndpoints,
)
from envoy_data_plane.envoy.config.listener.v3 import Filter, FilterChain, Listener
from envoy_data_plane.envoy.config.route.v3 import (
    Route,
    RouteAction,
    RouteActionMaxStreamDuration,
    RouteConfiguration,
    RouteMatch,
    VirtualHost,
)
from envoy_data_plane.envoy.extensions.filters.http.buffer.v3 import Buffer
from envoy_data_plane.envoy.extensions.filters.http.cors.v3 import Cors, CorsPolicy
from envoy_data_plane.envoy.extensions.filters.http.grpc_web.v3 import GrpcWeb
from envoy_data_plane.envoy.extensions.filters.http.router.v3 import Router
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
    HttpConnectionManager,
    HttpConnectionManagerCodecType,
    HttpFilter,
)
from envoy_data_plane.envoy.extensions.upstreams.http.v3 import (
    HttpProtocolOptions,
    HttpProtocolOptionsExplicitHttpConfig,
)
from envoy_data_plane.envoy.type.matcher.v3 import StringMatcher
from envoy_data_plane.google.protobuf import Any

__all__ = ["EdgeSettings", "build_bootstrap", "render_yaml"]

GATEWAY_CLUSTER = "gateway"
# Headers a gRPC-web client sends and must be allowed to send cross-origin.
ALLOWED_HEADERS = (
    "content-type,x-grpc-web,x-user-agent,grpc-timeout,authorization,"
    "connect-protocol-version,connect-timeout-ms"
)
# Without these the browser hides the gRPC status, and errors arrive as opaque failures.
EXPOSED_HEADERS = "grpc-status,grpc-message,grpc-status-details-bin"
# The packages whose RPCs the edge forwards; nothing else reaches the gateway through the edge.
PUBLIC_PREFIXES = ("/evalmesh.v1.", "/grpc.health.v1.")


@dataclasses.dataclass(frozen=True)
class EdgeSettings:
    """EdgeSettings are the few facts the edge needs; everything else is fixed policy."""

    listen_host: str
    listen_port: int
    gateway_host: str
    gateway_port: int
    admin_host: str = "127.0.0.1"
    admin_port: int = 0
    allowed_origins: tuple[str, ...] = ()
    max_request_bytes: int = 2 * 1024 * 1024 + 64 * 1024
    connect_timeout: timedelta = timedelta(seconds=2)


def _socket(host: str, port: int) -> Address:
    return Address(socket_address=SocketAddress(address=host, port_value=port))


def _typed_filter(name: str, config: AnyValue) -> HttpFilter:
    return HttpFilter(name=name, typed_config=Any.pack(config))


def _cors_policy(origins: tuple[str, ...]) -> CorsPolicy:
    return CorsPolicy(
        allow_origin_string_match=[StringMatcher(exact=origin) for origin in origins],
        allow_methods="GET,POST,OPTIONS",
        allow_headers=ALLOWED_HEADERS,
        expose_headers=EXPOSED_HEADERS,
        max_age="600",
        # A preflight from an origin outside the allowlist is answered here, never forwarded.
        forward_not_matching_preflights=False,
    )


def _gateway_route(prefix: str) -> Route:
    return Route(
        match=RouteMatch(prefix=prefix),
        route=RouteAction(
            cluster=GATEWAY_CLUSTER,
            # 0 disables Envoy's 15 s default, which would cut WatchEvaluation streams.
            timeout=timedelta(0),
            max_stream_duration=RouteActionMaxStreamDuration(grpc_timeout_header_max=timedelta(0)),
        ),
    )


def _route_config(settings: EdgeSettings) -> RouteConfiguration:
    host = VirtualHost(
        name="evalmesh",
        domains=["*"],
        routes=[_gateway_route(prefix) for prefix in PUBLIC_PREFIXES],
        typed_per_filter_config={
            "envoy.filters.http.cors": Any.pack(_cors_policy(settings.allowed_origins)),
        },
    )
    return RouteConfiguration(name="edge", virtual_hosts=[host])


def _connection_manager(settings: EdgeSettings) -> HttpConnectionManager:
    return HttpConnectionManager(
        stat_prefix="edge",
        codec_type=HttpConnectionManagerCodecType.AUTO,
        route_config=_route_config(settings),
        # Watches may sit quiet for long stretches; the gateway's keepalives guard dead peers.
        stream_idle_timeout=timedelta(hours=1),
        http_filters=[
            _typed_filter("envoy.filters.http.grpc_web", GrpcWeb()),
            _typed_filter("envoy.filters.http.cors", Cors()),
            _typed_filter(
                "envoy.filters.http.buffer", Buffer(max_request_bytes=settings.max_request_bytes)
            ),
            _typed_filter("envoy.filters.http.router", Router()),
        ],
    )


def _listener(settings: EdgeSettings) -> Listener:
    manager = Filter(
        name="envoy.filters.network.http_connection_manager",
        typed_config=Any.pack(_connection_manager(settings)),
    )
    return Listener(
        name="edge",
        address=_socket(settings.listen_host, settings.listen_port),
        filter_chains=[FilterChain(filters=[manager])],
    )


def _gateway_cluster(settings: EdgeSettings) -> Cluster:
    address = _socket(settings.gateway_host, settings.gateway_port)
    endpoint = LbEndpoint(endpoint=Endpoint(address=address))
    http2 = HttpProtocolOptions(
        explicit_http_config=HttpProtocolOptionsExplicitHttpConfig(
            http2_protocol_options=Http2ProtocolOptions()
        )
    )
    return Cluster(
        name=GATEWAY_CLUSTER,
        type=ClusterDiscoveryType.STATIC,
        connect_timeout=settings.connect_timeout,
        load_assignment=ClusterLoadAssignment(
            cluster_name=GATEWAY_CLUSTER,
            endpoints=[LocalityLbEndpoints(lb_endpoints=[endpoint])],
        ),
        typed_extension_protocol_options={
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": Any.pack(http2),
        },
    )


def build_bootstrap(settings: EdgeSettings) -> Bootstrap:
    """Return the complete Envoy bootstrap for the edge described by ``settings``."""
    return Bootstrap(
        admin=Admin(address=_socket(settings.admin_host, settings.admin_port)),
        static_resources=BootstrapStaticResources(
            listeners=[_listener(settings)],
            clusters=[_gateway_cluster(settings)],
        ),
    )


def render_yaml(settings: EdgeSettings) -> str:
    """Render the bootstrap for ``settings`` as YAML that ``envoy -c`` accepts."""
    document: dict[str, AnyValue] = build_bootstrap(settings).to_dict()
    text: str = yaml.safe_dump(document, sort_keys=True)
    return text
