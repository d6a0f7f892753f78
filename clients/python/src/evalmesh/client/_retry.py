"""When to retry a failed call, and how long to wait first: bounded exponential backoff with jitter.

Only calls that are safe to repeat are retried: reads, cancels (idempotent) and submits (every
submit carries a request_id, so a repeat returns the evaluation the first attempt created).

A stream the server refused (HTTP/2 RST_STREAM with REFUSED_STREAM) never reached it, so it is
sent again after a few milliseconds without spending one of the call's attempts. A client that
keeps a connection at the server's concurrent-stream limit sees such refusals now and then: the
client may open a stream the moment an answer arrives, before the server has counted the answered
stream as closed.
"""

from __future__ import annotations

import dataclasses
import random

import grpc

from evalmesh.client._errors import EvalmeshError

__all__ = ["CallRetries", "RetryPolicy", "refused_stream"]

_TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
# A watch stream also ends CANCELLED when the gateway shuts down under it; the client never
# cancels a stream it still reads, so for a watch this means "reconnect".
_WATCH_TRANSIENT = _TRANSIENT | {grpc.StatusCode.CANCELLED}


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Bounds on retrying: ``max_attempts`` per call (besides up to ``max_refused`` refused
    streams, resent at once), ``max_reconnects`` consecutive failed watch
    reconnects, waits growing from ``initial_backoff`` by ``multiplier`` up to ``max_backoff``
    seconds, each drawn between half and all of that ("equal jitter"). RESOURCE_EXHAUSTED is
    retried only when the server says when (RetryInfo), and only if that is at most
    ``max_retry_after`` seconds away.
    """

    max_attempts: int = 5
    max_refused: int = 100
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
        if error is not None and refused_stream(error) and failures <= self.max_refused:
            return _refused_delay()
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


def _refused_delay() -> float:
    """A refused stream is resent within milliseconds, spread so a burst does not resend at
    once (no secrecy needed)."""
    return random.uniform(0.002, 0.02)  # noqa: S311


def refused_stream(error: EvalmeshError) -> bool:
    """Whether the server refused the call's stream before reading it (REFUSED_STREAM, code 7).

    gRPC reports it as UNAVAILABLE with only this text to tell it from a lost connection.
    """
    return (
        error.code is grpc.StatusCode.UNAVAILABLE
        and "RST_STREAM" in error.message
        and "error code 7" in error.message
    )


class CallRetries:
    """The retries of one unary call: ``after(error)`` is the wait before the next try, or None."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy
        self.attempt = 1
        self._refused = 0

    def after(self, error: EvalmeshError) -> float | None:
        """Seconds to wait before trying again after ``error``, or None to give up."""
        if refused_stream(error) and self._refused < self._policy.max_refused:
            self._refused += 1
            return _refused_delay()
        delay = self._policy.delay(error, self.attempt)
        self.attempt += 1
        return delay
