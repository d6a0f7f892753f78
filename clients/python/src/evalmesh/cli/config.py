"""Where the CLI finds the mesh: flags, then environment, then the config file, then the state file.

The config file is TOML at ``$EVALMESH_CONFIG``, else ``$XDG_CONFIG_HOME/evalmesh/config.toml``
(``~/.config/evalmesh/config.toml``)::

    address = "evalmesh.example.com:443"
    api_key = "..."
    tls = true
    root_certificates = "/etc/ssl/evalmesh-ca.pem"   # optional
    timeout = 30                                    # seconds per call
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from evalmesh.client import ConfigurationError

__all__ = ["CONFIG_FILE", "FileConfig", "config_path", "load_config"]

CONFIG_FILE = "CONFIG_FILE"
_KEYS = {"address": str, "api_key": str, "tls": bool, "root_certificates": str, "timeout": float}


@dataclasses.dataclass(frozen=True)
class FileConfig:
    """The settings a config file may hold; unset ones are None."""

    address: str | None = None
    api_key: str | None = dataclasses.field(default=None, repr=False)
    tls: bool | None = None
    root_certificates: str | None = None
    timeout: float | None = None


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    """The config file to read (it need not exist)."""
    env = os.environ if environ is None else environ
    if env.get("EVALMESH_CONFIG"):
        return Path(env["EVALMESH_CONFIG"])
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "evalmesh" / "config.toml"


def load_config(path: Path) -> FileConfig:
    """Read ``path``; a missing file is an empty config, a malformed one an error naming it."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return FileConfig()
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigurationError(
            f"cannot read config file {path}: {error}", reason=CONFIG_FILE
        ) from error
    return FileConfig(**{key: _checked(path, key, value) for key, value in data.items()})


def _checked(path: Path, key: str, value: Any) -> Any:
    if key not in _KEYS:
        known = ", ".join(_KEYS)
        raise ConfigurationError(
            f"config file {path}: unknown setting {key!r} (known: {known})", reason=CONFIG_FILE
        )
    kind = _KEYS[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind):
        raise ConfigurationError(
            f"config file {path}: {key} must be a {kind.__name__}", reason=CONFIG_FILE
        )
    return value
