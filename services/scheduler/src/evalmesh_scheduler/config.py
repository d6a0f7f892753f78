"""The scheduler's settings, from environment variables only."""

from __future__ import annotations

from dataclasses import dataclass

from evalmesh_common import ServerConfig, env_field, env_group

__all__ = ["SchedulerConfig"]


@dataclass(frozen=True)
class SchedulerConfig:
    """Where the scheduler listens and where its dependencies are."""

    server: ServerConfig = env_group(ServerConfig)
    nats_url: str = env_field("EVALMESH_NATS_URL")
    storage_address: str = env_field("EVALMESH_STORAGE_ADDRESS")
