"""Requests are validated before any work, every problem named with its field and bound."""

from __future__ import annotations

from typing import Any

import pytest

from evalmesh.v1 import api_key_service_pb2, evaluation_pb2, evaluation_service_pb2
from evalmesh_common import InvalidArgument
from evalmesh_gateway.validation import (
    Bounds,
    validate_batch,
    validate_cancel,
    validate_create,
    validate_create_key,
    validate_list,
    validate_list_keys,
    validate_page_size,
)

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


def test_code_holding_a_nul_character_is_refused_on_the_code_field_with_its_line() -> None:
    found = violations(create(code="print(1)\nx = 'a\x00b'\n"))
    assert found["spec.code"] == "must not contain NUL characters (U+0000), found on line 2"


def test_a_nul_in_one_batch_item_names_that_items_code_field() -> None:
    batch = evaluation_service_pb2.BatchCreateEvaluationsRequest(
        requests=[create(), create(code="\x00")]
    )
    batch.requests[1].request_id = "req-2"
    with pytest.raises(InvalidArgument) as raised:
        validate_batch(batch, BOUNDS)
    assert [v.field for v in raised.value.violations] == ["requests[1].spec.code"]


def test_stdin_is_bytes_and_may_hold_nul_and_any_other_byte() -> None:
    spec = validate_create(create(stdin=bytes(range(256)) + b"\x00"), BOUNDS)
    assert spec.stdin.endswith(b"\xff\x00")


def test_code_may_hold_every_other_control_character_python_accepts() -> None:
    validate_create(create(code="x = 1\r\n\x0c\ty = '\x1b\u202e'\n"), BOUNDS)


GOOD_LABELS = {
    "team": "ml",
    "app.kubernetes.io/name": "web-2",
    "evalmesh/batch": "0123456789abcdef",
    "Run_ID.v2": "A.b_C-9",
    "empty": "",
    "k" * 63: "v" * 63,
    f"{'p' * 63}/{'n' * 63}": "x",
}


def test_labels_in_kubernetes_syntax_are_accepted() -> None:
    spec = validate_create(create(labels=GOOD_LABELS), BOUNDS)
    assert dict(spec.labels) == GOOD_LABELS


@pytest.mark.parametrize(
    "key",
    [
        "Bad Key",
        "-leading",
        "trailing.",
        "k" * 64,
        "a/b/c",
        "Example.com/name",
        "example..com/name",
        f"{'p' * 64}/name",
        "/name",
        "prefix/",
        "new\nline",
        "bidi\u202ekey",
        "caf\u00e9",
    ],
)
def test_a_label_key_outside_kubernetes_syntax_is_refused_with_the_rule(key: str) -> None:
    found = violations(create(labels={key: "v"}))
    assert list(found.values()) == [found[f"spec.labels[{key[:128]!r}]"]]
    assert found[f"spec.labels[{key[:128]!r}]"].startswith("keys are")


@pytest.mark.parametrize(
    "value",
    [
        "$(rm -rf ~)",
        "a b",
        "-x",
        "x_",
        "v" * 64,
        "line\nbreak",
        "\x1b[2J",
        "rtl\u202e",
        "caf\u00e9",
    ],
)
def test_a_label_value_outside_kubernetes_syntax_is_refused_with_the_rule(value: str) -> None:
    found = violations(create(labels={"key": value}))
    assert found["spec.labels['key']"].startswith("values are empty or 1 to 63")


def test_a_hostile_label_key_is_named_with_its_characters_escaped() -> None:
    (field,) = violations(create(labels={"\x1b]0;owned\x07": "v"}))
    assert field == "spec.labels['\\x1b]0;owned\\x07']"


def test_a_label_filter_of_a_listing_follows_the_label_syntax() -> None:
    request = evaluation_service_pb2.ListEvaluationsRequest(labels={"run": "ok", "x": "a;b"})
    with pytest.raises(InvalidArgument) as raised:
        validate_list(request, BOUNDS)
    assert [v.field for v in raised.value.violations] == ["labels['x']"]
    good = evaluation_service_pb2.ListEvaluationsRequest(labels=GOOD_LABELS, page_size=7)
    assert validate_list(good, BOUNDS) == 7


def key_violations(**fields: Any) -> dict[str, str]:
    request = api_key_service_pb2.CreateApiKeyRequest(**{"tenant": "team-ml", **fields})
    with pytest.raises(InvalidArgument) as raised:
        validate_create_key(request)
    return {v.field: v.description for v in raised.value.violations}


@pytest.mark.parametrize("tenant", ["default", "team-ml", "a", "a_b", "0", "t" * 64])
def test_tenant_names_of_lowercase_letters_digits_dash_and_underscore_are_accepted(
    tenant: str,
) -> None:
    validate_create_key(api_key_service_pb2.CreateApiKeyRequest(tenant=tenant))
    listing = api_key_service_pb2.ListApiKeysRequest(tenant=tenant)
    assert validate_list_keys(listing, BOUNDS) == 50


@pytest.mark.parametrize(
    "tenant",
    ["", "Team", "-x", "x-", "_x", "a b", "a.b", "t" * 65, "ten\nant", "ten\u202eant", "caf\u00e9"],
)
def test_a_tenant_name_outside_its_syntax_is_refused_with_the_rule(tenant: str) -> None:
    assert key_violations(tenant=tenant)["tenant"].startswith("must be 1 to 64 of a-z, 0-9")
    if tenant:  # an empty filter lists every tenant's keys
        with pytest.raises(InvalidArgument) as raised:
            validate_list_keys(api_key_service_pb2.ListApiKeysRequest(tenant=tenant), BOUNDS)
        assert raised.value.violations[0].field == "tenant"


def test_an_unknown_role_value_is_refused_on_the_role_field() -> None:
    request = api_key_service_pb2.CreateApiKeyRequest(tenant="team-ml")
    request.role = 999  # type: ignore[assignment]
    with pytest.raises(InvalidArgument) as raised:
        validate_create_key(request)
    assert [v.field for v in raised.value.violations] == ["role"]


PRINTABLE_TEXT = ["", "CI key for team ML ✓", "日本語\u3000名前", "naïve café 👍", "x" * 128]
HIDDEN_TEXT = [
    ("line\nbreak", "U+000A"),
    ("tab\there", "U+0009"),
    ("\x1b]0;owned\x07", "U+001B"),
    ("c1 \x9b control", "U+009B"),
    ("user\u202egnp.exe", "U+202E"),
    ("isolate\u2066x\u2069", "U+2066"),
    ("zero\u200bwidth", "U+200B"),
    ("\ufeffbom", "U+FEFF"),
    ("line\u2028separator", "U+2028"),
    ("private \ue000 use", "U+E000"),
    ("nul\x00", "U+0000"),
]


@pytest.mark.parametrize("text", PRINTABLE_TEXT)
def test_display_names_and_reasons_accept_printable_unicode(text: str) -> None:
    validate_create_key(api_key_service_pb2.CreateApiKeyRequest(tenant="t", display_name=text))
    validate_cancel(evaluation_service_pb2.CancelEvaluationRequest(id="ev_1", reason=text))


@pytest.mark.parametrize(("text", "code_point"), HIDDEN_TEXT)
def test_display_names_and_reasons_refuse_invisible_and_layout_characters_naming_them(
    text: str, code_point: str
) -> None:
    described = key_violations(display_name=text)["display_name"]
    assert described.startswith("must be printable text")
    assert described.endswith(f"found {code_point}")
    with pytest.raises(InvalidArgument) as raised:
        validate_cancel(evaluation_service_pb2.CancelEvaluationRequest(id="ev_1", reason=text))
    assert [v.field for v in raised.value.violations] == ["reason"]


def test_display_names_and_reasons_are_bounded_in_utf8_bytes() -> None:
    found = key_violations(display_name="é" * 65)
    assert found == {"display_name": "must be at most 128 bytes of UTF-8, got 130"}
    with pytest.raises(InvalidArgument) as raised:
        validate_cancel(evaluation_service_pb2.CancelEvaluationRequest(id="ev_1", reason="x" * 513))
    assert raised.value.violations[0].description == "must be at most 512 bytes of UTF-8, got 513"
    validate_cancel(evaluation_service_pb2.CancelEvaluationRequest(id="ev_1", reason="x" * 512))


def test_a_cancel_reports_a_bad_id_and_a_bad_reason_at_once() -> None:
    request = evaluation_service_pb2.CancelEvaluationRequest(id="../x", reason="a\nb")
    with pytest.raises(InvalidArgument) as raised:
        validate_cancel(request)
    assert [v.field for v in raised.value.violations] == ["id", "reason"]
