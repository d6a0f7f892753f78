"""The gateway's settings, from environment variables only."""

from __future__ import annotations

from dataclasses import dataclass

from evalmesh_common import ServerConfig, env_field, env_group

__all__ = ["GatewayConfig"]


@dataclass(frozen=True)
class GatewayConfig:
    """Where the gateway listens and where the services it delegates to are."""

    server: ServerConfig = env_group(ServerConfig)
    nats_url: str = env_field("EVALMESH_NATS_URL")
    storage_address: str = env_field("EVALMESH_STORAGE_ADDRESS")
    scheduler_address: str = env_field("EVALMESH_SCHEDULER_ADDRESS")
