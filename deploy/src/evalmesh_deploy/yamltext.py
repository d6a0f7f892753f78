"""YAML as people write deployment files: short lists and maps of plain values on one line
(``cap_drop: [ALL]``), the rest in indented blocks, keys in the order given, and never an alias
(``&id001``) where the same object appears twice. Comments and anchors are the caller's text."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import yaml

__all__ = ["block_yaml"]


class _Dumper(yaml.SafeDumper):
    """The safe dumper, without aliases and with list items indented under their key."""

    def ignore_aliases(self, data: Any) -> bool:
        return True

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, indentless=False)  # list items under their key, indented


def _inline(values: Iterable[Any]) -> bool:
    items = list(values)
    plain = all(isinstance(item, str | int | bool) for item in items)
    return plain and sum(len(str(item)) + 2 for item in items) <= 60


def _sequence(dumper: _Dumper, data: list[Any]) -> yaml.Node:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=_inline(data))


def _mapping(dumper: _Dumper, data: dict[str, Any]) -> yaml.Node:
    inline = bool(data) and _inline([*data, *data.values()])
    return dumper.represent_mapping("tag:yaml.org,2002:map", data, flow_style=inline or not data)


_Dumper.add_representer(list, _sequence)
_Dumper.add_representer(dict, _mapping)


def block_yaml(data: Mapping[str, Any], indent: int = 0) -> str:
    """``data`` as YAML, every line indented by ``indent`` spaces, to stand under a key."""
    text = yaml.dump(dict(data), Dumper=_Dumper, sort_keys=False, width=100 - indent)
    return "".join(" " * indent + line for line in text.splitlines(keepends=True))
