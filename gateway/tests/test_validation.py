"""Requests are validated before any work, every problem named with its field and bound."""

from __future__ import annotations

from typing import Any

import pytest

from evalmesh.v1 import evaluation_pb2, evaluation_service_pb2
from evalmesh_common import InvalidArgument
from evalmesh_gateway.validation import Bounds, validate_batch, validate_create, validate_page_size

BOUNDS = Bounds()
MIB = 1024 * 1024


def create(**spec: Any) -> evaluation_service_pb2.CreateEvaluationRequest:
    fields: dict[str, Any] = {"code": "print(1)", **spec}
    return evaluation_service_pb2.CreateEvaluationRequest(
        request_id="req-1", spec=evaluation_pb2.EvaluationSpec(**fields)
    )


def violations(request: evaluation_service_pb2.CreateEvaluationRequest) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as raised:
        validate_create(request, BOUNDS)
    return {v.field: v.description for v in raised.value.violations}


def test_defaults_are_resolved_for_a_minimal_request() -> None:
    spec = validate_create(create(), BOUNDS)
    assert spec.language == "python"
    assert spec.runtime == "python"
    assert spec.priority == evaluation_pb2.PRIORITY_NORMAL
    assert spec.limits.wall_timeout.seconds == 30
    assert spec.limits.memory_bytes == 256 * MIB
    assert spec.limits.max_processes == 64
    assert spec.limits.max_output_bytes == MIB


def test_empty_code_and_oversized_code_are_rejected_on_the_code_field() -> None:
    assert "spec.code" in violations(create(code=""))
    assert "1048576" in violations(create(code="x" * (MIB + 1)))["spec.code"]


@pytest.mark.parametrize(
    ("limits", "field"),
    [
        (evaluation_pb2.Limits(memory_bytes=0), "spec.limits.memory_bytes"),
        (evaluation_pb2.Limits(memory_bytes=-1), "spec.limits.memory_bytes"),
        (evaluation_pb2.Limits(memory_bytes=5 * 1024 * MIB), "spec.limits.memory_bytes"),
        (evaluation_pb2.Limits(max_processes=0), "spec.limits.max_processes"),
        (evaluation_pb2.Limits(max_processes=257), "spec.limits.max_processes"),
        (evaluation_pb2.Limits(max_output_bytes=0), "spec.limits.max_output_bytes"),
        (evaluation_pb2.Limits(cpu_millicores=10**6), "spec.limits.cpu_millicores"),
    ],
)
def test_limits_out_of_bounds_name_the_field_and_the_bound(
    limits: evaluation_pb2.Limits, field: str
) -> None:
    found = violations(create(limits=limits))
    assert field in found
    assert "between" in found[field]


def test_wall_timeout_outside_one_to_nine_hundred_seconds_is_rejected() -> None:
    limits = evaluation_pb2.Limits()
    limits.wall_timeout.FromSeconds(901)
    assert "900" in violations(create(limits=limits))["spec.limits.wall_timeout"]
    limits.wall_timeout.FromMilliseconds(500)
    assert "spec.limits.wall_timeout" in violations(create(limits=limits))


def test_unknown_priority_enum_value_names_the_priority_field() -> None:
    request = create()
    request.spec.priority = 999  # type: ignore[assignment]
    assert "999" in violations(request)["spec.priority"]


def test_unknown_language_and_runtime_are_rejected() -> None:
    found = violations(create(language="ruby", runtime="node"))
    assert {"spec.language", "spec.runtime"} <= set(found)


def test_every_problem_is_reported_at_once() -> None:
    request = create(code="", language="perl")
    request.request_id = ""
    assert {"request_id", "spec.code", "spec.language"} <= set(violations(request))


def test_malformed_labels_are_rejected() -> None:
    found = violations(create(labels={"Bad Key": "v", "ok": "x" * 300}))
    assert len(found) == 2


def test_batches_over_the_count_cap_are_rejected_before_any_item_is_checked() -> None:
    batch = evaluation_service_pb2.BatchCreateEvaluationsRequest(
        requests=[create()] * (BOUNDS.max_batch + 1)
    )
    with pytest.raises(InvalidArgument) as raised:
        validate_batch(batch, BOUNDS)
    assert [v.field for v in raised.value.violations] == ["requests"]


def test_a_batch_repeating_a_request_id_is_rejected() -> None:
    batch = evaluation_service_pb2.BatchCreateEvaluationsRequest(requests=[create(), create()])
    with pytest.raises(InvalidArgument) as raised:
        validate_batch(batch, BOUNDS)
    assert raised.value.violations[0].field == "requests[1].request_id"


def test_page_size_zero_means_the_default_and_above_the_cap_is_rejected() -> None:
    assert validate_page_size(0, BOUNDS) == 50
    with pytest.raises(InvalidArgument):
        validate_page_size(BOUNDS.max_page_size + 1, BOUNDS)


def test_byte_bounds_are_written_out_in_full() -> None:
    found = violations(create(limits=evaluation_pb2.Limits(memory_bytes=1)))
    assert "16777216 and 4294967296 bytes, got 1" in found["spec.limits.memory_bytes"]
