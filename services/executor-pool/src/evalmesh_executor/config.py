"""The executor pool's settings, from environment variables only."""

from __future__ import annotations

from dataclasses import dataclass

from evalmesh_common import ServerConfig, env_field, env_group

__all__ = ["ExecutorConfig"]


@dataclass(frozen=True)
class ExecutorConfig:
    """Where the executor listens, where its dependencies are, and how it sandboxes."""

    server: ServerConfig = env_group(ServerConfig)
    nats_url: str = env_field("EVALMESH_NATS_URL")
    storage_address: str = env_field("EVALMESH_STORAGE_ADDRESS")
    # "auto" picks docker when an engine answers, else bwrap.
    backend: str = env_field("EVALMESH_SANDBOX_BACKEND", default="auto")
    slots: int = env_field("EVALMESH_EXECUTOR_SLOTS", default=2)

    def __post_init__(self) -> None:
        if self.backend not in {"auto", "docker", "bwrap"}:
            raise ValueError(f"backend {self.backend!r} is not one of auto, docker, bwrap")
        if self.slots < 1:
            raise ValueError("slots must be at least 1")
