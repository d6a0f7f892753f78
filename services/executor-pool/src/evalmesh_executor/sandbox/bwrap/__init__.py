"""The ``bwrap`` backend: bubblewrap namespaces, cgroup limits and seccomp (see README.md)."""

from .runtime import DEFAULT_RUNTIMES, PYTHON, Runtime
from .sandbox import BwrapConfig, BwrapSandbox

__all__ = ["DEFAULT_RUNTIMES", "PYTHON", "BwrapConfig", "BwrapSandbox", "Runtime"]
