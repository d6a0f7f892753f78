"""From the limits a spec asks for to what the sandbox enforces, and back to what is reported.

An unset (or non-positive) field takes the operator's default; the scheduler has already
checked every set field against the operator's bounds. Scratch size and open files are the
operator's settings, never the user's.
"""

from __future__ import annotations

from evalmesh.v1 import evaluation_pb2
from evalmesh_executor.config import LimitDefaults
from evalmesh_executor.sandbox import SandboxLimits

__all__ = ["applied_limits", "sandbox_limits"]

_MILLI = 1000


def _positive(value: float, default: float) -> float:
    return value if value > 0 else default


def _wall_timeout(limits: evaluation_pb2.Limits, default: float) -> float:
    if not limits.HasField("wall_timeout"):
        return default
    return _positive(limits.wall_timeout.ToNanoseconds() / 1e9, default)


def sandbox_limits(limits: evaluation_pb2.Limits, defaults: LimitDefaults) -> SandboxLimits:
    """The sandbox limits for a spec's ``limits``, defaults filled in."""
    millicores = limits.cpu_millicores if limits.HasField("cpu_millicores") else 0
    return SandboxLimits(
        wall_timeout=_wall_timeout(limits, defaults.wall_timeout),
        memory_bytes=int(_positive(limits.memory_bytes, defaults.memory_bytes)),
        max_processes=int(_positive(limits.max_processes, defaults.max_processes)),
        max_output_bytes=int(_positive(limits.max_output_bytes, defaults.max_output_bytes)),
        cpu_quota=_positive(millicores, defaults.cpu_millicores) / _MILLI,
        scratch_bytes=defaults.scratch_bytes,
        scratch_inodes=defaults.scratch_inodes,
        max_open_files=defaults.max_open_files,
        max_file_size_bytes=defaults.scratch_bytes,
    )


def applied_limits(limits: SandboxLimits) -> evaluation_pb2.AppliedLimits:
    """The limits a sandbox enforces, as recorded with the claim."""
    applied = evaluation_pb2.AppliedLimits(
        memory_bytes=limits.memory_bytes,
        max_processes=limits.max_processes,
        max_output_bytes=limits.max_output_bytes,
        cpu_millicores=round(limits.cpu_quota * _MILLI),
        scratch_bytes=limits.scratch_bytes,
    )
    applied.wall_timeout.FromNanoseconds(round(limits.wall_timeout * 1e9))
    return applied
