"""The operators' ClusterService requests are checked at the edge, with the field and its bound."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf import duration_pb2

from evalmesh.v1 import cluster_service_pb2 as pb
from evalmesh_common import InvalidArgument
from evalmesh_gateway.operations import activity_request, drain_request, purge_request


def _seconds(value: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromTimedelta(timedelta(seconds=value))
    return duration


def _field(error: pytest.ExceptionInfo[InvalidArgument]) -> str:
    (violation,) = error.value.violations
    return violation.field


def test_a_drain_names_an_executor_by_its_id_syntax_and_bounds_the_grace() -> None:
    drain = drain_request(pb.DrainExecutorRequest(id="executor.host-1", grace=_seconds(30)))
    assert (drain.id, drain.grace.seconds) == ("executor.host-1", 30)
    assert not drain_request(pb.DrainExecutorRequest(id="executor-1")).HasField("grace")
    for bad in ("", "exec utor", "a" * 257, "x>y"):
        with pytest.raises(InvalidArgument) as error:
            drain_request(pb.DrainExecutorRequest(id=bad))
        assert _field(error) == "id"
    for grace in (-1, 3601):
        with pytest.raises(InvalidArgument) as error:
            drain_request(pb.DrainExecutorRequest(id="executor-1", grace=_seconds(grace)))
        assert _field(error) == "grace"


def test_a_purge_needs_an_age_and_turns_it_into_a_cutoff() -> None:
    now = datetime(2030, 1, 31, tzinfo=UTC)
    purge = purge_request(pb.PurgeEvaluationsRequest(older_than=_seconds(86_400)), now)
    assert purge.end_time_before.ToDatetime(tzinfo=UTC) == datetime(2030, 1, 30, tzinfo=UTC)
    assert purge_request(pb.PurgeEvaluationsRequest(older_than=_seconds(0)), now).HasField(
        "end_time_before"
    )
    with pytest.raises(InvalidArgument) as missing:
        purge_request(pb.PurgeEvaluationsRequest(), now)
    assert _field(missing) == "older_than"
    with pytest.raises(InvalidArgument) as negative:
        purge_request(pb.PurgeEvaluationsRequest(older_than=_seconds(-1)), now)
    assert _field(negative) == "older_than"


def test_activity_defaults_to_the_last_hour_in_sixty_buckets_and_bounds_the_window() -> None:
    default = activity_request(pb.GetQueueActivityRequest())
    assert (default.window.seconds, default.buckets) == (3600, 60)
    assert activity_request(pb.GetQueueActivityRequest(window=_seconds(600))).window.seconds == 600
    for window in (59, 86_401):
        with pytest.raises(InvalidArgument) as error:
            activity_request(pb.GetQueueActivityRequest(window=_seconds(window)))
        assert _field(error) == "window"
