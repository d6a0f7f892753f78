"""Checks storage makes itself: what its columns can hold, whatever its callers validated."""

from __future__ import annotations

from collections.abc import Mapping

from evalmesh_storage.domain import Spec
from evalmesh_storage.errors import FieldViolation, InvalidArgument, invalid

__all__ = [
    "MAX_LABELS",
    "check_page_size",
    "check_spec",
    "check_text",
    "clean_text",
    "require",
]

MAX_LABELS = 64
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


def require(field: str, value: str, max_length: int) -> None:
    """Refuse an empty value or one longer than ``max_length`` characters."""
    if not value:
        raise invalid(field, "is required")
    check_text(field, value, max_length)


def check_text(field: str, value: str, max_length: int) -> None:
    """Refuse text longer than ``max_length`` or holding NUL (PostgreSQL text cannot)."""
    if len(value) > max_length:
        raise invalid(field, f"must be at most {max_length} characters")
    if "\x00" in value:
        raise invalid(field, "must not contain NUL characters")


def clean_text(value: str, max_length: int) -> str:
    """Make trusted free text storable: drop NULs, cut to ``max_length``."""
    return value.replace("\x00", "\ufffd")[:max_length]


def check_spec(spec: Spec, prefix: str) -> None:
    """Refuse a spec whose strings cannot be stored as given."""
    violations: list[FieldViolation] = []
    for name, value, limit in (("language", spec.language, 32), ("runtime", spec.runtime, 64)):
        try:
            check_text(f"{prefix}{name}", value, limit)
        except InvalidArgument as error:
            violations.extend(error.violations)
    violations.extend(_label_violations(spec.labels, f"{prefix}labels"))
    if violations:
        raise InvalidArgument("invalid spec", violations)


def _label_violations(labels: Mapping[str, str], field: str) -> list[FieldViolation]:
    if len(labels) > MAX_LABELS:
        return [FieldViolation(field, f"at most {MAX_LABELS} labels")]
    found = []
    for key, value in labels.items():
        if not key or len(key) > 128 or "\x00" in key:
            found.append(FieldViolation(f"{field}[{key!r}]", "keys are 1 to 128 characters"))
        if len(value) > 256 or "\x00" in value:
            found.append(FieldViolation(f"{field}[{key!r}]", "values are at most 256 characters"))
    return found


def check_page_size(page_size: int, field: str = "page_size") -> int:
    """Return the effective page size: default 50, at most 500; negative is refused."""
    if page_size < 0:
        raise invalid(field, "must not be negative")
    return min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
