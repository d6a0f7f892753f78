"""The entry point every service's ``__main__.py`` calls.

``run`` loads the config (failing fast with every problem listed), configures JSON logging at
the configured level, turns traces on when an OTLP endpoint is configured, logs the config with
secrets redacted, builds the app inside the event loop (so async resources such as a NATS
connection bind to it), serves until SIGTERM/SIGINT, exports the spans still buffered, and
exits 0 after a clean shutdown, 78 (EX_CONFIG) on bad config, 1 on a crash.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import NoReturn, Protocol, TypeVar

from evalmesh_common.config import ConfigError, describe, load_config
from evalmesh_common.server.app import ServiceApp
from evalmesh_common.server.config import ServerConfig
from evalmesh_common.server.logging import configure_logging
from evalmesh_common.server.tracing import setup_tracing, shutdown_tracing

__all__ = ["EXIT_CONFIG", "ServiceConfig", "main", "run"]

logger = logging.getLogger(__name__)

EXIT_CONFIG = 78  # sysexits.h EX_CONFIG: restarting will not help until the config changes


class ServiceConfig(Protocol):
    """What ``run`` needs of a service's config: its embedded server settings."""

    @property
    def server(self) -> ServerConfig:
        """The server settings (``server: ServerConfig = env_group(ServerConfig)``)."""
        ...


C = TypeVar("C", bound=ServiceConfig)


def run(
    service: str,
    config_type: type[C],
    build: Callable[[C], Awaitable[ServiceApp]],
    environ: Mapping[str, str] | None = None,
) -> NoReturn:
    """Run the service to completion and exit the process with :func:`main`'s code."""
    sys.exit(main(service, config_type, build, environ))


def main(
    service: str,
    config_type: type[C],
    build: Callable[[C], Awaitable[ServiceApp]],
    environ: Mapping[str, str] | None = None,
) -> int:
    """Load config, log, build and serve ``service``; return the process exit code."""
    try:
        config = load_config(config_type, environ)
    except ConfigError as exc:
        configure_logging(service)
        logger.error("%s", exc, extra={"problems": list(exc.problems)})
        return EXIT_CONFIG
    configure_logging(service, config.server.log_level)
    # Before the app is built: its server and channels take their interceptors from it.
    setup_tracing(service, config.server.tracing)
    logger.info("starting %s", service, extra={"config": describe(config), "pid": os.getpid()})
    try:
        asyncio.run(_serve(config, build))
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were installed
        return 130
    except Exception:
        logger.exception("%s crashed", service)
        return 1
    finally:
        shutdown_tracing()
    return 0


async def _serve(config: C, build: Callable[[C], Awaitable[ServiceApp]]) -> None:
    app = await build(config)
    await app.serve()
