"""When to retry a failed call, and how long to wait first: bounded exponential backoff with jitter.

Only calls that are safe to repeat are retried: reads, cancels (idempotent) and submits (every
submit carries a request_id, so a repeat returns the evaluation the first attempt created).
"""

from __future__ import annotations

import dataclasses
import random

import grpc

from evalmesh.client._errors import EvalmeshError

__all__ = ["RetryPolicy"]

_TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
# A watch stream also ends CANCELLED when the gateway shuts down under it; the client never
# cancels a stream it still reads, so for a watch this means "reconnect".
_WATCH_TRANSIENT = _TRANSIENT | {grpc.StatusCode.CANCELLED}


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Bounds on retrying: ``max_attempts`` per call, ``max_reconnects`` consecutive failed watch
    reconnects, waits growing from ``initial_backoff`` by ``multiplier`` up to ``max_backoff``
    seconds, each drawn between half and all of that ("equal jitter"). RESOURCE_EXHAUSTED is
    retried only when the server says when (RetryInfo), and only if that is at most
    ``max_retry_after`` seconds away.
    """

    max_attempts: int = 5
    max_reconnects: int = 30
    initial_backoff: float = 0.2
    max_backoff: float = 5.0
    multiplier: float = 2.0
    max_retry_after: float = 30.0

    def delay(self, error: EvalmeshError, attempt: int) -> float | None:
        """Seconds to wait before retrying a unary call after ``attempt`` failed ones, or None."""
        if attempt >= self.max_attempts:
            return None
        return self._wait(error, attempt, _TRANSIENT)

    def reconnect_delay(self, error: EvalmeshError | None, failures: int) -> float | None:
        """Seconds to wait before reopening a watch after ``failures`` in a row, or None.

        ``error`` is None when the stream ended cleanly before the terminal state.
        """
        if failures > self.max_reconnects:
            return None
        if error is None:
            return self._backoff(failures)
        return self._wait(error, failures, _WATCH_TRANSIENT)

    def _wait(
        self, error: EvalmeshError, attempt: int, transient: frozenset[grpc.StatusCode]
    ) -> float | None:
        backoff = self._backoff(attempt)
        if error.code is grpc.StatusCode.RESOURCE_EXHAUSTED and error.retry_after is not None:
            if error.retry_after > self.max_retry_after:
                return None
            return max(error.retry_after, backoff)
        return backoff if error.code in transient else None

    def _backoff(self, attempt: int) -> float:
        ceiling = min(
            self.max_backoff, self.initial_backoff * self.multiplier ** max(0, attempt - 1)
        )
        # Jitter spreads the retries of many clients that failed together; it needs no secrecy.
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311
