"""The gateways behind the edge: one Envoy cluster, load-balanced and health-checked when there
are several.

A lone gateway is a plain cluster, as it always was: there is nothing to balance or fail over
to. With two or more, the edge sends each call to the gateway with fewer calls open (watches
are long streams), asks every gateway's ``grpc.health.v1`` each second, takes a gateway whose
connections fail out of rotation until the health check brings it back, and retries on another
gateway a call that never reached one.
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta

from envoy_data_plane.envoy.config.cluster.v3 import (
    CircuitBreakers,
    CircuitBreakersThresholds,
    Cluster,
    ClusterDiscoveryType,
    ClusterLbPolicy,
    OutlierDetection,
)
from envoy_data_plane.envoy.config.core.v3 import (
    Address,
    HealthCheck,
    HealthCheckGrpcHealthCheck,
    Http2ProtocolOptions,
    SocketAddress,
)
from envoy_data_plane.envoy.config.endpoint.v3 import (
    ClusterLoadAssignment,
    Endpoint,
    LbEndpoint,
    LocalityLbEndpoints,
)
from envoy_data_plane.envoy.config.route.v3 import RetryPolicy, RetryPolicyRetryHostPredicate
from envoy_data_plane.envoy.extensions.retry.host.previous_hosts.v3 import PreviousHostsPredicate
from envoy_data_plane.envoy.extensions.upstreams.http.v3 import (
    HttpProtocolOptions,
    HttpProtocolOptionsExplicitHttpConfig,
)
from envoy_data_plane.google.protobuf import Any

__all__ = [
    "GATEWAY_CLUSTER",
    "GATEWAY_HEALTH_SERVICE",
    "failover_retries",
    "gateway_cluster",
    "socket_address",
]

GATEWAY_CLUSTER = "gateway"
# What the edge asks each gateway's grpc.health.v1 about when there are several: SERVING once
# its NATS, storage and scheduler answer, NOT_SERVING again from SIGTERM on.
GATEWAY_HEALTH_SERVICE = "evalmesh.v1.EvaluationService"

Gateways = tuple[tuple[str, int], ...]
# Envoy's default bound on the calls in flight to one cluster.
_MAX_REQUESTS = 1024


def socket_address(host: str, port: int) -> Address:
    """An Envoy address for ``host``:``port``."""
    return Address(socket_address=SocketAddress(address=host, port_value=port))


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def gateway_cluster(gateways: Gateways, connect_timeout: timedelta) -> Cluster:
    """The cluster of ``gateways`` (host, port), spoken to over HTTP/2."""
    endpoints = [
        LbEndpoint(endpoint=Endpoint(address=socket_address(host, port))) for host, port in gateways
    ]
    http2 = HttpProtocolOptions(
        explicit_http_config=HttpProtocolOptionsExplicitHttpConfig(
            http2_protocol_options=Http2ProtocolOptions()
        )
    )
    cluster = Cluster(
        name=GATEWAY_CLUSTER,
        # Addresses are used as they are; names (compose services, a headless Kubernetes
        # service with an address per replica) are resolved and re-resolved.
        type=ClusterDiscoveryType.STATIC
        if all(_is_address(host) for host, _ in gateways)
        else ClusterDiscoveryType.STRICT_DNS,
        connect_timeout=connect_timeout,
        load_assignment=ClusterLoadAssignment(
            cluster_name=GATEWAY_CLUSTER,
            endpoints=[LocalityLbEndpoints(lb_endpoints=endpoints)],
        ),
        typed_extension_protocol_options={
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": Any.pack(http2),
        },
    )
    if len(endpoints) > 1:
        cluster.lb_policy = ClusterLbPolicy.LEAST_REQUEST
        cluster.health_checks = [_health_check()]
        cluster.outlier_detection = _ejection()
        cluster.circuit_breakers = _retry_room()
    return cluster


def _health_check() -> HealthCheck:
    """Every second, traffic or not (by default an idle cluster is checked once a minute): two
    failures take a gateway out, one success brings it back."""
    return HealthCheck(
        timeout=timedelta(seconds=1),
        interval=timedelta(seconds=1),
        no_traffic_interval=timedelta(seconds=1),
        unhealthy_threshold=2,
        healthy_threshold=1,
        grpc_health_check=HealthCheckGrpcHealthCheck(service_name=GATEWAY_HEALTH_SERVICE),
    )


def _ejection() -> OutlierDetection:
    """A gateway whose connections fail twice in a row (killed, and the health check has not
    seen it yet) is out for 5 s; never more than half of them, so a fault they share (the
    scheduler away) cannot empty the cluster. gRPC errors travel in HTTP 200 and never count."""
    # Connection failures and resets count as gateway failures (502, 503, 504), which Envoy
    # does not act on unless told to. (Setting consecutive_5xx would do too, but
    # envoy-data-plane spells it consecutive5Xx in JSON, which Envoy refuses.)
    return OutlierDetection(
        consecutive_gateway_failure=2,
        enforcing_consecutive_gateway_failure=100,
        interval=timedelta(seconds=1),
        base_ejection_time=timedelta(seconds=5),
        max_ejection_percent=50,
    )


def _retry_room() -> CircuitBreakers:
    """Room for every call in flight to fail over at once (Envoy allows 3 retries at a time by
    default, so a gateway killed under load would fail calls another gateway could take). The
    retries are only of calls no gateway saw, so they add no work to the gateways."""
    return CircuitBreakers(thresholds=[CircuitBreakersThresholds(max_retries=_MAX_REQUESTS)])


def failover_retries() -> RetryPolicy:
    """Retry, on another gateway, only a call that never reached one.

    A refused connection, a refused stream or a reset before the request went out leave no
    doubt that no gateway saw the call, so retrying it is safe for every RPC, even one that is
    not idempotent (CreateApiKey). A reset after that is the client's to retry: its submits
    carry request ids, and Envoy cannot know which calls do.
    """
    return RetryPolicy(
        retry_on="connect-failure,refused-stream,reset-before-request",
        num_retries=2,
        retry_host_predicate=[
            RetryPolicyRetryHostPredicate(
                name="envoy.retry_host_predicates.previous_hosts",
                typed_config=Any.pack(PreviousHostsPredicate()),
            )
        ],
        host_selection_retry_max_attempts=3,
    )
