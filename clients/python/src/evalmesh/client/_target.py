"""Find the mesh and the key: arguments, then environment variables, then the local state file.

``evalmesh up`` (and ``scripts/up``) write ``.evalmesh/mesh.json`` with the gateway address and the
first admin key; a client started anywhere below that folder finds it by walking up from the
working directory, or through ``EVALMESH_HOME`` (the folder holding ``mesh.json``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from evalmesh.client._errors import ConfigurationError

__all__ = ["Target", "find_state_file", "read_state", "resolve_target"]

ADDRESS_VARIABLE = "EVALMESH_ADDRESS"
API_KEY_VARIABLE = "EVALMESH_API_KEY"
HOME_VARIABLE = "EVALMESH_HOME"
STATE_FILE = Path(".evalmesh") / "mesh.json"

_NO_MESH = (
    "no evalmesh address: pass address=, set EVALMESH_ADDRESS, or start a local mesh with "
    "`evalmesh up`"
)
_NO_KEY = "no evalmesh API key: pass api_key=, set EVALMESH_API_KEY, or use `evalmesh up`'s key"


@dataclasses.dataclass(frozen=True)
class Target:
    """Where to connect and with which key; ``source`` says where they were found."""

    address: str
    api_key: str = dataclasses.field(repr=False)
    source: str


def find_state_file(
    start: Path | None = None, environ: Mapping[str, str] | None = None
) -> Path | None:
    """The running local mesh's state file, or None when there is none."""
    env = os.environ if environ is None else environ
    if env.get(HOME_VARIABLE):
        path = Path(env[HOME_VARIABLE]) / "mesh.json"
        return path if path.is_file() else None
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / STATE_FILE
        if candidate.is_file():
            return candidate
    return None


def read_state(path: Path | None) -> dict[str, Any]:
    """The state file's contents, or an empty dict when it is missing or unreadable."""
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def resolve_target(
    address: str | None,
    api_key: str | None,
    environ: Mapping[str, str] | None = None,
    start: Path | None = None,
) -> Target:
    """Resolve the address and key, raising ConfigurationError when either cannot be found.

    The state file's admin key is only used for the state file's own gateway, so a key meant for
    the local mesh is never sent to another address.
    """
    env = os.environ if environ is None else environ
    address = address or env.get(ADDRESS_VARIABLE) or None
    api_key = api_key or env.get(API_KEY_VARIABLE) or None
    source = "arguments and environment"
    if address is None or api_key is None:
        path = find_state_file(start, env)
        state = read_state(path)
        gateway = str(state.get("gateway") or "")
        if address is None and gateway:
            address, source = gateway, f"local mesh state file {path}"
        if api_key is None and gateway and address == gateway:
            api_key = str(state.get("admin_api_key") or "") or None
    if address is None:
        raise ConfigurationError(_NO_MESH, reason="NO_ADDRESS")
    if api_key is None:
        raise ConfigurationError(_NO_KEY, reason="NO_API_KEY")
    return Target(address=address, api_key=api_key, source=source)
