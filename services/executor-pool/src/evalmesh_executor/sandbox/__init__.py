"""Sandbox backends of the executor pool. Domain code: it never imports grpc.

This face hands on the value types every backend speaks (``core.models``). The backends are
their own packages, ``bwrap`` and ``docker``; what both share is in ``core``.
"""

from .core.models import (
    MAX_CHUNK_BYTES,
    OutputCallback,
    OutputChunk,
    OutputStream,
    Package,
    RuntimeDetails,
    SandboxError,
    SandboxLimits,
    SandboxOutcome,
    SandboxRequest,
    SandboxResult,
    SandboxUnavailableError,
)

__all__ = [
    "MAX_CHUNK_BYTES",
    "OutputCallback",
    "OutputChunk",
    "OutputStream",
    "Package",
    "RuntimeDetails",
    "SandboxError",
    "SandboxLimits",
    "SandboxOutcome",
    "SandboxRequest",
    "SandboxResult",
    "SandboxUnavailableError",
]
