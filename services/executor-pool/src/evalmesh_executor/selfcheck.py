"""The escape self-check that gates readiness.

At start and every ``interval`` the instance runs the sandbox's escape canaries aimed at the
platform's real ports (NATS, storage, its own gRPC and metrics ports) plus the metadata address,
the Docker and containerd sockets, writes outside scratch and the host's processes. Until a
check passes, and from the moment one fails, the instance is NOT_SERVING, pulls no work, logs
why and says so in its PoolStatus and metrics. A check that could not complete counts as failed
and is retried sooner.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from evalmesh_executor.sandbox import SandboxError
from evalmesh_executor.sandbox.core.backend import SandboxBackend

__all__ = ["SelfCheck", "address_port", "url_port"]

logger = logging.getLogger(__name__)

_RETRY_INCOMPLETE = 10.0
_NOT_YET = "the sandbox self-check has not passed yet"


def url_port(url: str, default: int) -> int | None:
    """The TCP port of a URL such as ``nats://host:4222`` (the scheme's default if absent)."""
    try:
        return urlsplit(url).port or default
    except ValueError:
        return None


def address_port(address: str) -> int | None:
    """The TCP port of a ``host:port`` address."""
    port = address.rpartition(":")[2]
    return int(port) if port.isdigit() else None


class SelfCheck:
    """Runs the canaries now and then; ``reason`` is empty only while the last check passed."""

    def __init__(
        self, sandbox: SandboxBackend, ports: Callable[[], Sequence[int]], interval: float
    ) -> None:
        self._sandbox = sandbox
        self._ports = ports
        self.interval = interval
        self.reason = _NOT_YET
        self.escaped: tuple[str, ...] = ()  # the canaries that got out in the last completed check

    @property
    def passed(self) -> bool:
        """True while the latest check passed."""
        return not self.reason

    async def probe(self) -> bool:
        """Health dependency."""
        return self.passed

    async def run(self) -> None:
        """Check at once, then every ``interval`` (sooner after an incomplete check)."""
        while True:
            completed = await self.check()
            await asyncio.sleep(
                self.interval if completed else min(self.interval, _RETRY_INCOMPLETE)
            )

    async def check(self) -> bool:
        """Run the canaries once; False if the check could not complete."""
        ports = sorted(set(self._ports()))
        try:
            escaped = await self._sandbox.self_check(ports)
        except SandboxError as exc:
            self._fail(f"the sandbox self-check did not complete: {exc}")
            return False
        self.escaped = tuple(escaped)
        if escaped:
            self._fail("sandbox escape canaries succeeded: " + ", ".join(escaped))
        else:
            if self.reason:
                logger.info("sandbox self-check passed", extra={"ports": ports})
            self.reason = ""
        return True

    def _fail(self, reason: str) -> None:
        logger.error("%s; not taking work", reason, extra={"self_check": reason})
        self.reason = reason
