"""Validate public requests before any work, and resolve the defaults of an evaluation's spec.

Every problem is reported at once, each as a field violation that names the field and the bound
it broke, so a client (or the UI) can point at the exact input.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import TypeAlias

from evalmesh.v1 import api_key_pb2, api_key_service_pb2, evaluation_pb2, evaluation_service_pb2
from evalmesh_common import FieldViolation, InvalidArgument
from evalmesh_gateway.names import (
    DISPLAY_NAME_MAX_BYTES,
    REASON_MAX_BYTES,
    label_key_problem,
    label_value_problem,
    tenant_problem,
    text_problem,
)

__all__ = [
    "Bounds",
    "validate_batch",
    "validate_batch_size",
    "validate_cancel",
    "validate_create",
    "validate_create_key",
    "validate_id",
    "validate_list",
    "validate_list_keys",
    "validate_page_size",
]

#: What CreateEvaluation and RunEvaluation both take: a request_id and a spec.
CreateLike: TypeAlias = (
    evaluation_service_pb2.CreateEvaluationRequest | evaluation_service_pb2.RunEvaluationRequest
)

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ID_RULE = "must be 1 to 64 of A-Z, a-z, 0-9, '_' and '-'"
_PRIORITIES = frozenset(evaluation_pb2.Priority.values())
_ROLES = frozenset(api_key_pb2.Role.values())


@dataclasses.dataclass(frozen=True)
class Bounds:
    """The operator's limits: defaults and the allowed range of every client-set value."""

    max_code_bytes: int = MIB
    max_stdin_bytes: int = MIB
    max_batch: int = 1000
    runtimes: tuple[str, ...] = ("python", "python-ml")
    timeout_default: float = 30.0
    timeout_min: float = 1.0
    timeout_max: float = 900.0
    memory_default: int = 256 * MIB
    memory_min: int = 16 * MIB
    memory_max: int = 4 * GIB
    processes_default: int = 64
    processes_max: int = 256
    output_default: int = MIB
    output_max: int = 16 * MIB
    cpu_default: int = 1000
    cpu_min: int = 100
    cpu_max: int = 4000
    max_labels: int = 32
    max_page_size: int = 500


def _range(
    field: str, value: float, low: float, high: float, unit: str
) -> Iterator[FieldViolation]:
    if not low <= value <= high:
        yield FieldViolation(
            field, f"must be between {_num(low)} and {_num(high)} {unit}, got {_num(value)}"
        )


def _num(value: float) -> str:
    # Whole numbers in full ("16777216 bytes"), never in scientific notation.
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _limits(limits: evaluation_pb2.Limits, bounds: Bounds, at: str) -> Iterator[FieldViolation]:
    if limits.HasField("wall_timeout"):
        seconds = limits.wall_timeout.ToTimedelta().total_seconds()
        yield from _range(
            f"{at}.wall_timeout", seconds, bounds.timeout_min, bounds.timeout_max, "seconds"
        )
    if limits.HasField("memory_bytes"):
        yield from _range(
            f"{at}.memory_bytes", limits.memory_bytes, bounds.memory_min, bounds.memory_max, "bytes"
        )
    if limits.HasField("max_processes"):
        yield from _range(
            f"{at}.max_processes", limits.max_processes, 1, bounds.processes_max, "processes"
        )
    if limits.HasField("max_output_bytes"):
        yield from _range(
            f"{at}.max_output_bytes", limits.max_output_bytes, 1, bounds.output_max, "bytes"
        )
    if limits.HasField("cpu_millicores"):
        yield from _range(
            f"{at}.cpu_millicores",
            limits.cpu_millicores,
            bounds.cpu_min,
            bounds.cpu_max,
            "millicores",
        )


def _labels(labels: dict[str, str], bounds: Bounds, at: str) -> Iterator[FieldViolation]:
    if len(labels) > bounds.max_labels:
        yield FieldViolation(at, f"at most {bounds.max_labels} labels, got {len(labels)}")
        return
    for key, value in labels.items():
        # repr() shows a hostile key's control and bidi characters as escapes.
        for problem in (label_key_problem(key), label_value_problem(value)):
            if problem:
                yield FieldViolation(f"{at}[{key[:128]!r}]", problem)


def _code(code: str, bounds: Bounds, at: str) -> Iterator[FieldViolation]:
    code_bytes = len(code.encode())
    if code_bytes == 0:
        yield FieldViolation(at, "must not be empty")
    elif code_bytes > bounds.max_code_bytes:
        yield FieldViolation(at, f"must be at most {bounds.max_code_bytes} bytes, got {code_bytes}")
    elif (nul := code.find("\x00")) >= 0:
        # Whether Python refuses NUL in source depends on its version; refuse it for all.
        line = code.count("\n", 0, nul) + 1
        yield FieldViolation(at, f"must not contain NUL characters (U+0000), found on line {line}")


def _text(value: str, max_bytes: int, field: str) -> Iterator[FieldViolation]:
    if problem := text_problem(value, max_bytes):
        yield FieldViolation(field, problem)


def _spec(spec: evaluation_pb2.EvaluationSpec, bounds: Bounds, at: str) -> Iterator[FieldViolation]:
    yield from _code(spec.code, bounds, f"{at}.code")
    if len(spec.stdin) > bounds.max_stdin_bytes:
        yield FieldViolation(
            f"{at}.stdin", f"must be at most {bounds.max_stdin_bytes} bytes, got {len(spec.stdin)}"
        )
    if spec.language not in ("", "python"):
        yield FieldViolation(f"{at}.language", f'must be "python", got {spec.language[:32]!r}')
    if spec.runtime and spec.runtime not in bounds.runtimes:
        yield FieldViolation(f"{at}.runtime", f"must be one of {', '.join(bounds.runtimes)}")
    if spec.priority not in _PRIORITIES:
        yield FieldViolation(f"{at}.priority", f"unknown priority value {spec.priority}")
    yield from _limits(spec.limits, bounds, f"{at}.limits")
    yield from _labels(dict(spec.labels), bounds, f"{at}.labels")


def _create(request: CreateLike, bounds: Bounds, at: str) -> Iterator[FieldViolation]:
    if not _REQUEST_ID.fullmatch(request.request_id):
        yield FieldViolation(
            f"{at}request_id", "must be 1 to 128 printable ASCII characters without spaces"
        )
    yield from _spec(request.spec, bounds, f"{at}spec")


def _raise(violations: list[FieldViolation]) -> None:
    if violations:
        fields = ", ".join(violation.field for violation in violations[:5])
        raise InvalidArgument(f"invalid request: {fields}", violations)


def resolve_spec(
    spec: evaluation_pb2.EvaluationSpec, bounds: Bounds
) -> evaluation_pb2.EvaluationSpec:
    """Return a copy of a valid ``spec`` with every default filled in."""
    resolved = evaluation_pb2.EvaluationSpec()
    resolved.CopyFrom(spec)
    resolved.language = spec.language or "python"
    resolved.runtime = spec.runtime or bounds.runtimes[0]
    if spec.priority == evaluation_pb2.PRIORITY_UNSPECIFIED:
        resolved.priority = evaluation_pb2.PRIORITY_NORMAL
    limits = resolved.limits
    if not limits.HasField("wall_timeout"):
        limits.wall_timeout.FromSeconds(int(bounds.timeout_default))
    if not limits.HasField("memory_bytes"):
        limits.memory_bytes = bounds.memory_default
    if not limits.HasField("max_processes"):
        limits.max_processes = bounds.processes_default
    if not limits.HasField("max_output_bytes"):
        limits.max_output_bytes = bounds.output_default
    if not limits.HasField("cpu_millicores"):
        limits.cpu_millicores = bounds.cpu_default
    return resolved


def validate_create(request: CreateLike, bounds: Bounds) -> evaluation_pb2.EvaluationSpec:
    """Raise InvalidArgument listing every problem, or return the spec with defaults resolved."""
    _raise(list(_create(request, bounds, "")))
    return resolve_spec(request.spec, bounds)


def validate_batch(
    request: evaluation_service_pb2.BatchCreateEvaluationsRequest, bounds: Bounds
) -> list[evaluation_pb2.EvaluationSpec]:
    """Validate every request of a batch (all or nothing) and return their resolved specs."""
    validate_batch_size(request, bounds)
    violations: list[FieldViolation] = []
    seen: set[str] = set()
    for index, item in enumerate(request.requests):
        violations.extend(_create(item, bounds, f"requests[{index}]."))
        if item.request_id in seen:
            violations.append(
                FieldViolation(f"requests[{index}].request_id", "repeats an earlier request_id")
            )
        seen.add(item.request_id)
    _raise(violations)
    return [resolve_spec(item.spec, bounds) for item in request.requests]


def validate_batch_size(
    request: evaluation_service_pb2.BatchCreateEvaluationsRequest, bounds: Bounds
) -> int:
    """Raise InvalidArgument unless the batch holds 1 to ``max_batch`` requests; return how many."""
    count = len(request.requests)
    if not 1 <= count <= bounds.max_batch:
        bound = f"must hold 1 to {bounds.max_batch} requests, got {count}"
        _raise([FieldViolation("requests", bound)])
    return count


def validate_id(value: str, field: str = "id") -> str:
    """Raise InvalidArgument unless ``value`` looks like an identifier."""
    if not _ID.fullmatch(value):
        _raise([FieldViolation(field, _ID_RULE)])
    return value


def validate_cancel(request: evaluation_service_pb2.CancelEvaluationRequest) -> None:
    """Raise InvalidArgument unless the id is an identifier and the reason printable text."""
    violations = [] if _ID.fullmatch(request.id) else [FieldViolation("id", _ID_RULE)]
    violations.extend(_text(request.reason, REASON_MAX_BYTES, "reason"))
    _raise(violations)


def validate_list(request: evaluation_service_pb2.ListEvaluationsRequest, bounds: Bounds) -> int:
    """Raise InvalidArgument for a malformed label filter or page size; return the page size."""
    _raise(list(_labels(dict(request.labels), bounds, "labels")))
    return validate_page_size(request.page_size, bounds)


def validate_create_key(request: api_key_service_pb2.CreateApiKeyRequest) -> None:
    """Raise InvalidArgument unless tenant, role and display name follow the contract."""
    violations: list[FieldViolation] = []
    if problem := tenant_problem(request.tenant):
        violations.append(FieldViolation("tenant", problem))
    if request.role not in _ROLES:
        violations.append(FieldViolation("role", f"unknown role value {request.role}"))
    violations.extend(_text(request.display_name, DISPLAY_NAME_MAX_BYTES, "display_name"))
    _raise(violations)


def validate_list_keys(request: api_key_service_pb2.ListApiKeysRequest, bounds: Bounds) -> int:
    """Raise InvalidArgument for a malformed tenant filter or page size; return the page size."""
    if request.tenant and (problem := tenant_problem(request.tenant)):
        _raise([FieldViolation("tenant", problem)])
    return validate_page_size(request.page_size, bounds)


def validate_page_size(value: int, bounds: Bounds, default: int = 50) -> int:
    """Return the page size to use: the default for 0, else ``value`` within 1..max."""
    if value == 0:
        return default
    if not 1 <= value <= bounds.max_page_size:
        _raise(
            [
                FieldViolation(
                    "page_size", f"must be between 1 and {bounds.max_page_size}, got {value}"
                )
            ]
        )
    return value
