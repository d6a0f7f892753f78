"""The gateway's settings, from environment variables only."""

from __future__ import annotations

from dataclasses import dataclass

from evalmesh_common import Seconds, env_field, env_group
from evalmesh_common.server import ServerConfig
from evalmesh_common.server.tls import UpstreamTls
from evalmesh_gateway.validation import Bounds

__all__ = ["GatewayConfig"]


MIB = 1024 * 1024


@dataclass(frozen=True)
class GatewayConfig:
    """Where the gateway listens, where its upstreams are, and its per-tenant protections."""

    server: ServerConfig = env_group(ServerConfig)
    # How storage and the scheduler are dialled (TLS, mutual TLS) when the mesh asks for it.
    upstream_tls: UpstreamTls = env_group(UpstreamTls)
    nats_url: str = env_field("EVALMESH_NATS_URL")
    storage_address: str = env_field("EVALMESH_STORAGE_ADDRESS")
    scheduler_address: str = env_field("EVALMESH_SCHEDULER_ADDRESS")
    # Comma-separated runtime names clients may ask for; the first is the default.
    runtimes: str = env_field("EVALMESH_RUNTIMES", default="python,python-ml")
    rate_per_second: float = env_field("EVALMESH_TENANT_RATE", default=50.0)
    rate_burst: float = env_field("EVALMESH_TENANT_BURST", default=200.0)
    max_watches_per_tenant: int = env_field("EVALMESH_TENANT_MAX_WATCHES", default=200)
    # How often each gateway tells the others what it admitted and how many watches are open,
    # per tenant, so the limits above hold over all gateways; 0: each gateway on its own.
    tenant_sync_interval: Seconds = env_field(
        "EVALMESH_TENANT_SYNC_INTERVAL", default=Seconds(0.05)
    )
    # How long storage's answer about an API key is reused; revocations reach every gateway at
    # once over NATS, so this only bounds the cost of a revocation message that was lost.
    api_key_cache_ttl: float = env_field("EVALMESH_API_KEY_CACHE_TTL", default=10.0)
    # A request is at most 2 MiB (code and stdin are 1 MiB each, plus framing); grpc refuses a
    # larger message with RESOURCE_EXHAUSTED before any handler runs.
    max_request_bytes: int = env_field("EVALMESH_MAX_REQUEST_BYTES", default=2 * MIB + 64 * 1024)
    # Calls (watches included) the gateway handles at once; beyond it new calls get
    # RESOURCE_EXHAUSTED at once instead of queueing without bound.
    max_concurrent_rpcs: int = env_field("EVALMESH_GATEWAY_MAX_CONCURRENT_RPCS", default=4096)
    # Streams one client connection may have open at once; more wait in the client for a free
    # one. At the limit, gRPC's server refuses a stream now and then (REFUSED_STREAM): a client
    # opens the next the moment an answer arrives, before the server counts that stream closed.
    # evalmesh's client resends those at once; at 100, 500 runs at once on one connection saw
    # about 400 refusals, so the limit sits well above what one client usually keeps open.
    max_streams_per_connection: int = env_field("EVALMESH_MAX_STREAMS_PER_CONNECTION", default=1000)
    # Unary calls end at this deadline whatever the client asked for; watches are not limited.
    max_deadline: float = env_field("EVALMESH_MAX_DEADLINE", default=60.0)

    def bounds(self) -> Bounds:
        """The validation bounds these settings describe."""
        names = tuple(name.strip() for name in self.runtimes.split(",") if name.strip())
        return Bounds(runtimes=names or ("python",))

    def __post_init__(self) -> None:
        if self.tenant_sync_interval < 0:
            raise ValueError("EVALMESH_TENANT_SYNC_INTERVAL must not be negative")
