"""Sandbox backends of the executor pool. Domain code: it never imports grpc."""

from .bwrap import BwrapConfig, BwrapSandbox
from .models import (
    MAX_CHUNK_BYTES,
    OutputCallback,
    OutputChunk,
    OutputStream,
    SandboxError,
    SandboxLimits,
    SandboxOutcome,
    SandboxRequest,
    SandboxResult,
    SandboxUnavailableError,
)
from .runtime import DEFAULT_RUNTIMES, PYTHON, Runtime

__all__ = [
    "DEFAULT_RUNTIMES",
    "MAX_CHUNK_BYTES",
    "PYTHON",
    "BwrapConfig",
    "BwrapSandbox",
    "OutputCallback",
    "OutputChunk",
    "OutputStream",
    "Runtime",
    "SandboxError",
    "SandboxLimits",
    "SandboxOutcome",
    "SandboxRequest",
    "SandboxResult",
    "SandboxUnavailableError",
]
