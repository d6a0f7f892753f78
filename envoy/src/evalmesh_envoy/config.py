"""Build evalmesh's Envoy bootstrap as typed envoy-data-plane objects and render it to YAML.

With a static directory (the browser UI's production build), the edge also serves it on the same
origin as the API: every top-level file and folder of the build gets a route answered by Envoy's
file server filter, and any other GET is answered with index.html (the single-page-app fallback).
gRPC-web calls are POSTs to the ``/evalmesh.v1.`` routes, which never reach the file server.

With a certificate (``tls_cert_file``/``tls_key_file``) the listener speaks TLS (HTTP/2 and
HTTP/1.1 by ALPN, TLS 1.2 at least), a second listener on ``http_redirect_port`` answers every
plain-HTTP request with a permanent redirect to HTTPS, and responses carry HSTS. Every response
carries the security headers of ``security_headers`` (a strict Content-Security-Policy, nosniff,
frame denial, no referrer), set by the first filter so the file server's answers get them too.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path
from typing import Any as AnyValue

import yaml
from envoy_data_plane.envoy.config.bootstrap.v3 import Admin, Bootstrap, BootstrapStaticResources
from envoy_data_plane.envoy.config.common.mutation_rules.v3 import HeaderMutation as Mutation
from envoy_data_plane.envoy.config.core.v3 import (
    DataSource,
    HeaderValue,
    HeaderValueOption,
    HeaderValueOptionHeaderAppendAction,
    TransportSocket,
)
from envoy_data_plane.envoy.config.listener.v3 import Filter, FilterChain, Listener
from envoy_data_plane.envoy.config.route.v3 import (
    DirectResponseAction,
    HeaderMatcher,
    RedirectAction,
    RedirectActionRedirectResponseCode,
    Route,
    RouteAction,
    RouteActionMaxStreamDuration,
    RouteConfiguration,
    RouteMatch,
    VirtualHost,
)
from envoy_data_plane.envoy.extensions.common.async_files.v3 import (
    AsyncFileManagerConfig,
    AsyncFileManagerConfigThreadPool,
)
from envoy_data_plane.envoy.extensions.filters.http.buffer.v3 import Buffer
from envoy_data_plane.envoy.extensions.filters.http.cors.v3 import Cors, CorsPolicy
from envoy_data_plane.envoy.extensions.filters.http.file_server.v3 import (
    FileServerConfig,
    FileServerConfigDirectoryBehavior,
    FileServerConfigPathMapping,
)
from envoy_data_plane.envoy.extensions.filters.http.grpc_web.v3 import GrpcWeb
from envoy_data_plane.envoy.extensions.filters.http.header_mutation.v3 import (
    HeaderMutation,
    Mutations,
)
from envoy_data_plane.envoy.extensions.filters.http.router.v3 import Router
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
    HttpConnectionManager,
    HttpConnectionManagerCodecType,
    HttpFilter,
)
from envoy_data_plane.envoy.extensions.transport_sockets.tls.v3 import (
    CommonTlsContext,
    DownstreamTlsContext,
    TlsCertificate,
    TlsParameters,
    TlsParametersTlsProtocol,
)
from envoy_data_plane.envoy.type.matcher.v3 import RegexMatcher, StringMatcher
from envoy_data_plane.google.protobuf import Any

from evalmesh_envoy.upstream import (
    GATEWAY_CLUSTER,
    failover_retries,
    gateway_cluster,
    socket_address,
)

__all__ = ["HSTS", "EdgeSettings", "build_bootstrap", "render_yaml", "security_headers"]

# Headers a gRPC-web client sends and must be allowed to send cross-origin.
ALLOWED_HEADERS = (
    "content-type,x-grpc-web,x-user-agent,grpc-timeout,authorization,"
    "connect-protocol-version,connect-timeout-ms"
)
# Without these the browser hides the gRPC status, and errors arrive as opaque failures.
EXPOSED_HEADERS = "grpc-status,grpc-message,grpc-status-details-bin"
# The packages whose RPCs the edge forwards; nothing else reaches the gateway through the edge.
PUBLIC_PREFIXES = ("/evalmesh.v1.", "/grpc.health.v1.")
FILE_SERVER = "envoy.filters.http.file_server"
INDEX_FILE = "index.html"
# index.html is the body of the fallback route, which Envoy reads once at start and caps in size.
MAX_INDEX_BYTES = 64 * 1024
# Content types by file suffix for what a Vite build holds; anything else is octet-stream.
CONTENT_TYPES = {
    "html": "text/html; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "mjs": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "json": "application/json",
    "map": "application/json",
    "webmanifest": "application/manifest+json",
    "txt": "text/plain; charset=utf-8",
    "svg": "image/svg+xml",
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "ico": "image/x-icon",
    "woff": "font/woff",
    "woff2": "font/woff2",
    "wasm": "application/wasm",
}


# The UI loads only its own scripts, styles, images and fonts, talks only to its own origin
# (gRPC-web), may not be framed, and no plugin, <base> or form may point elsewhere. Styles may
# also be inline: the code editor (CodeMirror 6) injects its theme as <style> elements, and a
# static file server cannot stamp a per-response nonce on them. Scripts stay 'self' only.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
    ]
)
# Two years, subdomains included: the HSTS preload list's minimum.
HSTS = "max-age=63072000; includeSubDomains"
FILTER_HEADERS = "envoy.filters.http.header_mutation"
TLS_SOCKET = "envoy.transport_sockets.tls"
HTTPS_DEFAULT_PORT = 443


def security_headers(tls: bool) -> dict[str, str]:
    """The headers every response of the edge carries (HSTS only over TLS)."""
    headers = {
        "content-security-policy": CONTENT_SECURITY_POLICY,
        "x-content-type-options": "nosniff",
        "x-frame-options": "DENY",
        "referrer-policy": "no-referrer",
        "cross-origin-opener-policy": "same-origin",
    }
    if tls:
        headers["strict-transport-security"] = HSTS
    return headers


@dataclasses.dataclass(frozen=True)
class EdgeSettings:
    """EdgeSettings are the few facts the edge needs; everything else is fixed policy."""

    listen_host: str
    listen_port: int
    gateway_host: str
    gateway_port: int
    # gateway_replicas are further gateways (host, port) beside the first. With any, the edge
    # balances calls over all of them, checks each one's grpc.health.v1 every second, takes one
    # that stops answering out of rotation, and retries on another gateway a call that never
    # reached one. A lone gateway is configured as before: nothing to balance or fail over to.
    gateway_replicas: tuple[tuple[str, int], ...] = ()
    admin_host: str = "127.0.0.1"
    admin_port: int = 0
    allowed_origins: tuple[str, ...] = ()
    max_request_bytes: int = 2 * 1024 * 1024 + 64 * 1024
    connect_timeout: timedelta = timedelta(seconds=2)
    # static_dir is the UI build (holding index.html) to serve beside the API; None serves no files.
    static_dir: Path | None = None
    # tls_cert_file and tls_key_file (PEM) make the listener HTTPS; both or neither.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # http_redirect_port opens a plain-HTTP listener (same host) that redirects to HTTPS.
    http_redirect_port: int | None = None
    # public_https_port is the port redirects point at (what clients dial: a published port
    # may differ from listen_port); None means listen_port. 443 is left out of the URL.
    public_https_port: int | None = None

    def __post_init__(self) -> None:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        if self.http_redirect_port is not None and not self.tls:
            raise ValueError("http_redirect_port needs TLS (tls_cert_file and tls_key_file)")

    @property
    def tls(self) -> bool:
        """True when the listener speaks TLS."""
        return self.tls_cert_file is not None

    @property
    def gateways(self) -> tuple[tuple[str, int], ...]:
        """Every gateway behind the edge, the first one first."""
        return ((self.gateway_host, self.gateway_port), *self.gateway_replicas)


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


def _gateway_route(prefix: str, replicated: bool) -> Route:
    action = RouteAction(
        cluster=GATEWAY_CLUSTER,
        # 0 disables Envoy's 15 s default, which would cut WatchEvaluation streams.
        timeout=timedelta(0),
        max_stream_duration=RouteActionMaxStreamDuration(grpc_timeout_header_max=timedelta(0)),
    )
    if replicated:
        action.retry_policy = failover_retries()
    return Route(match=RouteMatch(prefix=prefix), route=action)


def _file_manager() -> AsyncFileManagerConfig:
    return AsyncFileManagerConfig(thread_pool=AsyncFileManagerConfigThreadPool(thread_count=1))


def _file_server(static_dir: Path) -> FileServerConfig:
    return FileServerConfig(
        manager_config=_file_manager(),
        path_mappings=[
            FileServerConfigPathMapping(request_path_prefix="/", file_path_prefix=f"{static_dir}/")
        ],
        content_types=CONTENT_TYPES,
        default_content_type="application/octet-stream",
        directory_behaviors=[FileServerConfigDirectoryBehavior(default_file=INDEX_FILE)],
    )


def _header(key: str, value: str) -> HeaderValueOption:
    return HeaderValueOption(header=HeaderValue(key=key, value=value))


def _set_header(key: str, value: str) -> HeaderValueOption:
    return HeaderValueOption(
        header=HeaderValue(key=key, value=value),
        append_action=HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD,
    )


def _security_filter(tls: bool) -> HttpFilter:
    mutations = [
        Mutation(append=_set_header(key, value)) for key, value in security_headers(tls).items()
    ]
    return _typed_filter(
        FILTER_HEADERS, HeaderMutation(mutations=Mutations(response_mutations=mutations))
    )


def _static_route(match: RouteMatch, file_server: FileServerConfig) -> Route:
    # The file server filter answers these before the router; the 404 is only reached if it
    # ever passes a request on.
    return Route(
        match=match,
        direct_response=DirectResponseAction(status=404),
        typed_per_filter_config={FILE_SERVER: Any.pack(file_server)},
    )


def _static_matches(static_dir: Path) -> list[RouteMatch]:
    """One match per top-level entry of the build (folders by prefix), plus "/" itself."""
    matches = [RouteMatch(path="/")]
    for entry in sorted(static_dir.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            matches.append(RouteMatch(prefix=f"/{entry.name}/"))
        elif entry.is_file():
            matches.append(RouteMatch(path=f"/{entry.name}"))
    return matches


def _fallback_route(static_dir: Path) -> Route:
    """Any other GET or HEAD is a client-side route of the app: answer with index.html."""
    method = HeaderMatcher(
        name=":method", string_match=StringMatcher(safe_regex=RegexMatcher(regex="GET|HEAD"))
    )
    return Route(
        match=RouteMatch(prefix="/", headers=[method]),
        direct_response=DirectResponseAction(
            status=200, body=DataSource(filename=str(static_dir / INDEX_FILE))
        ),
        response_headers_to_add=[
            _header("content-type", CONTENT_TYPES["html"]),
            _header("cache-control", "no-cache"),
        ],
    )


def _static_routes(static_dir: Path) -> list[Route]:
    index = static_dir / INDEX_FILE
    if not index.is_file():
        raise ValueError(f"{static_dir} has no {INDEX_FILE}: build the UI first")
    if index.stat().st_size > MAX_INDEX_BYTES:
        raise ValueError(f"{index} is larger than {MAX_INDEX_BYTES} bytes")
    file_server = _file_server(static_dir)
    routes = [_static_route(match, file_server) for match in _static_matches(static_dir)]
    return [*routes, _fallback_route(static_dir)]


def _route_config(settings: EdgeSettings) -> RouteConfiguration:
    replicated = len(settings.gateways) > 1
    routes = [_gateway_route(prefix, replicated) for prefix in PUBLIC_PREFIXES]
    if settings.static_dir is not None:
        routes.extend(_static_routes(settings.static_dir))
    host = VirtualHost(
        name="evalmesh",
        domains=["*"],
        routes=routes,
        typed_per_filter_config={
            "envoy.filters.http.cors": Any.pack(_cors_policy(settings.allowed_origins)),
        },
    )
    return RouteConfiguration(
        name="edge", virtual_hosts=[host], max_direct_response_body_size_bytes=MAX_INDEX_BYTES
    )


def _http_filters(settings: EdgeSettings) -> list[HttpFilter]:
    filters = [
        # First, so every response passes it on the way out, the file server's included.
        _security_filter(settings.tls),
        _typed_filter("envoy.filters.http.grpc_web", GrpcWeb()),
        _typed_filter("envoy.filters.http.cors", Cors()),
        _typed_filter(
            "envoy.filters.http.buffer", Buffer(max_request_bytes=settings.max_request_bytes)
        ),
    ]
    if settings.static_dir is not None:
        # Without a path mapping of its own it serves nothing: only routes that carry one do.
        filters.append(_typed_filter(FILE_SERVER, FileServerConfig(manager_config=_file_manager())))
    return [*filters, _typed_filter("envoy.filters.http.router", Router())]


def _connection_manager(settings: EdgeSettings) -> HttpConnectionManager:
    return HttpConnectionManager(
        stat_prefix="edge",
        codec_type=HttpConnectionManagerCodecType.AUTO,
        route_config=_route_config(settings),
        # Watches may sit quiet for long stretches; the gateway's keepalives guard dead peers.
        stream_idle_timeout=timedelta(hours=1),
        http_filters=_http_filters(settings),
    )


def _tls_socket(settings: EdgeSettings) -> TransportSocket:
    certificate = TlsCertificate(
        certificate_chain=DataSource(filename=str(settings.tls_cert_file)),
        private_key=DataSource(filename=str(settings.tls_key_file)),
    )
    context = DownstreamTlsContext(
        common_tls_context=CommonTlsContext(
            tls_certificates=[certificate],
            # h2 for gRPC clients and browsers, http/1.1 for gRPC-web over HTTP/1.1.
            alpn_protocols=["h2", "http/1.1"],
            tls_params=TlsParameters(tls_minimum_protocol_version=TlsParametersTlsProtocol.TLSv1_2),
        )
    )
    return TransportSocket(name=TLS_SOCKET, typed_config=Any.pack(context))


def _manager_filter(manager: HttpConnectionManager) -> Filter:
    return Filter(
        name="envoy.filters.network.http_connection_manager", typed_config=Any.pack(manager)
    )


def _listener(settings: EdgeSettings) -> Listener:
    chain = FilterChain(filters=[_manager_filter(_connection_manager(settings))])
    if settings.tls:
        chain.transport_socket = _tls_socket(settings)
    return Listener(
        name="edge",
        address=socket_address(settings.listen_host, settings.listen_port),
        filter_chains=[chain],
    )


def _redirect_listener(settings: EdgeSettings, port: int) -> Listener:
    """Plain HTTP on ``port``: every request is redirected, permanently, to the HTTPS edge."""
    https_port = settings.public_https_port or settings.listen_port
    redirect = RedirectAction(
        https_redirect=True,
        response_code=RedirectActionRedirectResponseCode.PERMANENT_REDIRECT,
    )
    if https_port != HTTPS_DEFAULT_PORT:  # for 443 Envoy drops the request's :80 by itself
        redirect.port_redirect = https_port
    host = VirtualHost(
        name="redirect",
        domains=["*"],
        routes=[Route(match=RouteMatch(prefix="/"), redirect=redirect)],
    )
    manager = HttpConnectionManager(
        stat_prefix="edge_redirect",
        codec_type=HttpConnectionManagerCodecType.AUTO,
        route_config=RouteConfiguration(name="redirect", virtual_hosts=[host]),
        http_filters=[
            _security_filter(False),
            _typed_filter("envoy.filters.http.router", Router()),
        ],
    )
    return Listener(
        name="edge_redirect",
        address=socket_address(settings.listen_host, port),
        filter_chains=[FilterChain(filters=[_manager_filter(manager)])],
    )


def _listeners(settings: EdgeSettings) -> list[Listener]:
    listeners = [_listener(settings)]
    if settings.http_redirect_port is not None:
        listeners.append(_redirect_listener(settings, settings.http_redirect_port))
    return listeners


def build_bootstrap(settings: EdgeSettings) -> Bootstrap:
    """Return the complete Envoy bootstrap for the edge described by ``settings``."""
    return Bootstrap(
        admin=Admin(address=socket_address(settings.admin_host, settings.admin_port)),
        static_resources=BootstrapStaticResources(
            listeners=_listeners(settings),
            clusters=[gateway_cluster(settings.gateways, settings.connect_timeout)],
        ),
    )


def render_yaml(settings: EdgeSettings) -> str:
    """Render the bootstrap for ``settings`` as YAML that ``envoy -c`` accepts."""
    document: dict[str, AnyValue] = build_bootstrap(settings).to_dict()
    text: str = yaml.safe_dump(document, sort_keys=True)
    return text
