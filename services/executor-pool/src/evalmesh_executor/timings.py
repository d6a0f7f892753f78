"""Where one attempt's time went, as the executor measures it for storage (``RunTimings``).

Every moment is an offset on this process's monotonic clock from the moment the claim's answer
arrived; storage adds the offsets to the claim's own time (``start_time``, on the database
clock). No wall clock of this host enters the record, so the stages of an evaluation line up
whatever the skew between hosts, and a clock step mid-run cannot make one negative.
"""

from __future__ import annotations

from evalmesh.storage.v1 import storage_service_pb2
from evalmesh_executor.sandbox import SandboxResult

__all__ = ["run_timings"]


def _offset(seconds: float) -> int:
    return max(0, round(seconds * 1e9))


def run_timings(
    claimed_at: float | None, result: SandboxResult, stored_at: float | None
) -> storage_service_pb2.RunTimings | None:
    """The run's moments after ``claimed_at`` (all ``time.monotonic()``): the program's start
    and end from the sandbox, and ``stored_at`` when the output written during the run was all
    stored (None: the last bytes travel with the result). None when nothing was measured."""
    if claimed_at is None or not result.ended_at:
        return None
    timings = storage_service_pb2.RunTimings()
    started = result.ended_at - result.wall_time_s
    timings.sandbox_ready.FromNanoseconds(_offset(started - claimed_at))
    timings.program_ended.FromNanoseconds(_offset(result.ended_at - claimed_at))
    if stored_at is not None:
        timings.output_stored.FromNanoseconds(_offset(max(stored_at, result.ended_at) - claimed_at))
    return timings
