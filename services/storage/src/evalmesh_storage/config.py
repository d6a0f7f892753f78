"""The storage service's settings, read once from the environment (see README for the table)."""

from __future__ import annotations

from dataclasses import dataclass

from evalmesh_common.config import Seconds, Secret, env_field, env_group
from evalmesh_common.server.config import ServerConfig
from evalmesh_storage.db import DatabaseSettings
from evalmesh_storage.retry import RetryPolicy

__all__ = ["DEFAULT_DATABASE_URL", "DEV_PAGE_TOKEN_SECRET", "StorageConfig"]

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///.evalmesh/storage.db"
"""The embedded default: a SQLite file under the working directory's local state folder."""

DEV_PAGE_TOKEN_SECRET = "evalmesh-dev-page-token-secret-not-for-production"  # noqa: S105
"""Signs page tokens when no secret is configured: fine on one laptop, never in production."""


@dataclass(frozen=True)
class StorageConfig:
    """Everything ``python -m evalmesh_storage`` needs."""

    server: ServerConfig = env_group(ServerConfig)
    database_url: str = env_field("EVALMESH_DATABASE_URL", default=DEFAULT_DATABASE_URL)
    migrate: bool = env_field("EVALMESH_DATABASE_MIGRATE", default=True)
    pool_size: int = env_field("EVALMESH_DATABASE_POOL_SIZE", default=10)
    max_overflow: int = env_field("EVALMESH_DATABASE_MAX_OVERFLOW", default=10)
    pool_timeout: Seconds = env_field("EVALMESH_DATABASE_POOL_TIMEOUT", default=Seconds(10.0))
    busy_timeout: Seconds = env_field("EVALMESH_DATABASE_BUSY_TIMEOUT", default=Seconds(5.0))
    connect_timeout: Seconds = env_field("EVALMESH_DATABASE_CONNECT_TIMEOUT", default=Seconds(5.0))
    # Transient errors are retried with backoff for this long before UNAVAILABLE is answered.
    retry_budget: Seconds = env_field("EVALMESH_DATABASE_RETRY_BUDGET", default=Seconds(3.0))
    # How long start-up waits for the database to accept the migration before giving up.
    startup_timeout: Seconds = env_field("EVALMESH_DATABASE_STARTUP_TIMEOUT", default=Seconds(60.0))
    page_token_secret: Secret = env_field(
        "EVALMESH_PAGE_TOKEN_SECRET", default=Secret(DEV_PAGE_TOKEN_SECRET)
    )

    def __post_init__(self) -> None:
        if self.pool_size < 1 or self.max_overflow < 0:
            raise ValueError("pool_size must be at least 1 and max_overflow not negative")
        if len(self.page_token_secret.reveal().encode()) < 16:
            raise ValueError("EVALMESH_PAGE_TOKEN_SECRET must be at least 16 bytes")
        for name in ("pool_timeout", "busy_timeout", "connect_timeout", "retry_budget"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")

    @property
    def uses_dev_secret(self) -> bool:
        """True while page tokens are signed with the public development secret."""
        return self.page_token_secret.reveal() == DEV_PAGE_TOKEN_SECRET

    def database(self) -> DatabaseSettings:
        """The engine and retry settings."""
        return DatabaseSettings(
            url=self.database_url,
            pool_size=self.pool_size,
            max_overflow=self.max_overflow,
            pool_timeout=self.pool_timeout,
            busy_timeout=self.busy_timeout,
            connect_timeout=self.connect_timeout,
            retry=RetryPolicy(budget=self.retry_budget),
        )
