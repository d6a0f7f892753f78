"""Fixtures for the sandbox tests: a real BwrapSandbox on this host, small limits, U2 checks.

Every test that uses `sandbox` ends with the U2 check: 1 s after the last result, no job
cgroup exists and no process of any job is left on the host.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest
from sandbox_helpers import SMALL, Runner, assert_teardown_complete

from evalmesh_executor.sandbox import (
    BwrapConfig,
    BwrapSandbox,
    OutputChunk,
    SandboxRequest,
    SandboxResult,
)


def _sandbox_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the bwrap backend tests need root (cgroup writes)"
    if shutil.which("bwrap") is None and not os.path.exists("/usr/bin/bwrap"):
        return "bwrap is not installed (apt-get install bubblewrap)"
    return None


@pytest.fixture
async def sandbox() -> AsyncIterator[BwrapSandbox]:
    """A prepared sandbox with a cgroup parent of its own; after the test, U2 must hold."""
    reason = _sandbox_unavailable()
    if reason:
        pytest.skip(reason)
    parent = "evalmesh-test-" + uuid.uuid4().hex[:12]
    async with BwrapSandbox(BwrapConfig(cgroup_parent=parent)) as box:
        yield box
        await assert_teardown_complete(box, parent)
    for directory in box.cgroups.parents:
        directory.rmdir()


@pytest.fixture
def run(sandbox: BwrapSandbox) -> Runner:
    """run(code, stdin=b"", on_output=None, cancel=None, **limit_overrides) -> SandboxResult."""

    async def _run(
        code: str | bytes,
        stdin: bytes = b"",
        on_output: Callable[[OutputChunk], Awaitable[None]] | None = None,
        cancel: asyncio.Event | None = None,
        **limits: Any,
    ) -> SandboxResult:
        source = code.encode() if isinstance(code, str) else code
        request = SandboxRequest(source, stdin, "python", replace(SMALL, **limits))
        return await sandbox.run(request, on_output, cancel=cancel)

    return _run
