"""Environment variables parsed once into a frozen, typed dataclass.

Each service declares its settings as a frozen dataclass whose fields come from
:func:`env_field` (one variable each) or :func:`env_group` (a nested settings class)::

    @dataclass(frozen=True)
    class StorageConfig:
        server: ServerConfig = env_group(ServerConfig)
        database_url: Secret = env_field("EVALMESH_DATABASE_URL")
        reaper_interval: Seconds = env_field("EVALMESH_REAPER_INTERVAL", default=Seconds(5))

    config = load_config(StorageConfig)          # reads os.environ, or a Mapping you pass

The field's annotation picks the parser: ``str``, ``int``, ``float``, ``bool``, :data:`Seconds`
(``"30"``, ``"2.5s"``, ``"500ms"``, ``"5m"``, ``"1h"``, ``"30d"``), :class:`Secret`, and
``X | None`` of those. A :class:`Secret` may instead be read from the file that
``<NAME>_FILE`` names (how compose and Kubernetes hand secrets over). A variable without a
default is required. An empty value counts as unset, because compose files write ``VAR=`` for
"not given". Every missing or malformed variable is reported at once in one
:class:`ConfigError`, as is a ``ValueError`` from the class's own ``__post_init__`` checks. This
module is the only place that reads ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import hmac
import math
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, NewType, TypeVar, overload

from evalmesh_common.redact import redact_url

__all__ = [
    "ConfigError",
    "Seconds",
    "Secret",
    "describe",
    "env_field",
    "env_group",
    "load_config",
]

T = TypeVar("T")

Seconds = NewType("Seconds", float)
"""A duration in seconds; its variable may carry a unit (``ms``, ``s``, ``m``, ``h``, ``d``)."""

_ENV = "evalmesh.env"
_GROUP = "evalmesh.group"
_HIDDEN = "**********"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_DURATION = re.compile(r"(?P<number>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>ms|s|m|h|d)?")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


class ConfigError(Exception):
    """The environment does not describe a valid configuration; ``problems`` lists why."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"invalid configuration ({len(self.problems)} problems):\n{lines}")


class Secret:
    """A string that never shows itself in ``repr``, ``str``, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret text; call this only where the secret is used."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({_HIDDEN!r})"

    def __str__(self) -> str:
        return _HIDDEN

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)


@overload
def env_field(name: str) -> Any: ...
@overload
def env_field(name: str, *, default: T) -> T: ...
def env_field(name: str, *, default: Any = dataclasses.MISSING) -> Any:
    """Declare a dataclass field read from the environment variable ``name``.

    Fields are keyword-only, so required and defaulted fields may come in any order.
    """
    return dataclasses.field(default=default, kw_only=True, metadata={_ENV: name})


def env_group(cls: type[T]) -> T:
    """Declare a field holding another settings dataclass, loaded from the same environment."""
    return dataclasses.field(default_factory=cls, kw_only=True, metadata={_GROUP: True})


def load_config(cls: type[T], environ: Mapping[str, str] | None = None) -> T:
    """Build ``cls`` from ``environ`` (default ``os.environ``) or raise one ``ConfigError``."""
    problems: list[str] = []
    config = _load(cls, os.environ if environ is None else environ, problems)
    if problems or config is None:
        raise ConfigError(problems)
    return config


def describe(config: object) -> dict[str, Any]:
    """Return ``config`` as a JSON-ready dict with secrets hidden and URL credentials masked."""
    return {
        field.name: _describe_value(getattr(config, field.name))
        for field in dataclasses.fields(config)  # type: ignore[arg-type]
    }


def _describe_value(value: object) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return describe(value)
    if isinstance(value, Secret):
        return _HIDDEN
    if isinstance(value, str):
        return redact_url(value)
    return value


def _load(cls: type[T], environ: Mapping[str, str], problems: list[str]) -> T | None:
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    before = len(problems)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if field.metadata.get(_GROUP):
            values[field.name] = _load(hints[field.name], environ, problems)
        elif _ENV in field.metadata:
            _read_field(field, hints[field.name], environ, values, problems)
    if len(problems) > before:
        return None
    try:
        return cls(**values)
    except ValueError as exc:  # cross-field checks in __post_init__
        problems.append(f"{cls.__name__}: {exc}")
        return None


def _read_field(
    field: dataclasses.Field[Any],
    hint: Any,
    environ: Mapping[str, str],
    values: dict[str, Any],
    problems: list[str],
) -> None:
    name: str = field.metadata[_ENV]
    raw = environ.get(name, "")
    if raw == "" and _strip_optional(hint) is Secret and environ.get(f"{name}_FILE", ""):
        from_file = _read_secret_file(f"{name}_FILE", environ[f"{name}_FILE"], problems)
        if from_file is None:
            return
        raw = from_file
    if raw == "":
        if field.default is dataclasses.MISSING:
            problems.append(f"{name} is required but not set")
        return
    try:
        values[field.name] = _parse(hint, raw)
    except ValueError as exc:
        problems.append(f"{name}={raw!r} is invalid: {exc}")


def _read_secret_file(variable: str, path: str, problems: list[str]) -> str | None:
    """A secret's value from the file ``variable`` names (compose and Kubernetes mount secrets
    as files, so they never sit in the environment); one trailing newline is not part of it."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().removesuffix("\n")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{variable}={path!r} cannot be read: {exc}")
        return None


def _parse(hint: Any, raw: str) -> Any:
    hint = _strip_optional(hint)
    if hint is Seconds:
        return _parse_seconds(raw)
    if hint is Secret:
        return Secret(raw)
    if hint is bool:
        return _parse_bool(raw)
    if hint is int:
        return _parse_int(raw)
    if hint is float:
        return _parse_float(raw)
    if hint is str:
        return raw
    raise TypeError(f"unsupported config field type {hint!r}")


def _strip_optional(hint: Any) -> Any:
    if typing.get_origin(hint) not in (typing.Union, types.UnionType):
        return hint
    inner = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    if len(inner) != 1:
        raise TypeError(f"unsupported config field type {hint!r}")
    return inner[0]


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in _TRUE | _FALSE:
        return lowered in _TRUE
    raise ValueError("expected one of true/false, yes/no, on/off, 1/0")


def _parse_int(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError("expected an integer") from None


def _parse_float(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError("expected a number") from None
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


def _parse_seconds(raw: str) -> Seconds:
    match = _DURATION.fullmatch(raw.strip())
    if match is None:
        raise ValueError("expected a duration such as 30, 2.5s, 500ms, 5m, 1h or 30d")
    return Seconds(float(match["number"]) * _UNIT_SECONDS[match["unit"]])
