"""The state every command shares: connection settings, output mode, and one lazily built client."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any

import click
from rich.console import Console

from evalmesh.cli.config import FileConfig, config_path, load_config
from evalmesh.client import Client

__all__ = ["App", "pass_app"]


@dataclasses.dataclass
class App:
    """Global options (``evalmesh --address ... CMD``) and what commands need from them."""

    address: str | None = None
    api_key: str | None = dataclasses.field(default=None, repr=False)
    tls: bool | None = None
    root_certificates: str | None = None
    rpc_timeout: float | None = None
    as_json: bool = False
    _client: Client | None = None
    # Piped output keeps whole table rows (rich would otherwise wrap at 80 columns).
    out: Console = dataclasses.field(
        default_factory=lambda: Console(highlight=False, width=None if _tty() else 1000)
    )
    err: Console = dataclasses.field(default_factory=lambda: Console(stderr=True, highlight=False))

    def client(self) -> Client:
        """The client, built on first use from flags, environment, config file and state file."""
        if self._client is None:
            config = self._config()
            self._client = Client(
                self.address or os.environ.get("EVALMESH_ADDRESS") or config.address,
                self.api_key or os.environ.get("EVALMESH_API_KEY") or config.api_key,
                tls=bool(self.tls if self.tls is not None else config.tls),
                root_certificates=self.root_certificates or config.root_certificates,
                timeout=self.rpc_timeout or config.timeout or 30.0,
            )
        return self._client

    def close(self) -> None:
        """Close the client if one was built."""
        if self._client is not None:
            self._client.close()

    def json(self, flag: bool) -> bool:
        """Whether to print JSON: the command's ``--json`` or the global one."""
        return flag or self.as_json

    def print_json(self, data: Any) -> None:
        """Print ``data`` as indented JSON on stdout."""
        click.echo(json.dumps(data, indent=2, default=str))

    def note(self, message: str) -> None:
        """A human message on stderr (never mixed into a program's stdout)."""
        click.echo(message, err=True)

    def _config(self) -> FileConfig:
        return load_config(config_path())


pass_app = click.make_pass_decorator(App, ensure=True)


def _tty() -> bool:
    return sys.stdout.isatty() or bool(os.environ.get("COLUMNS"))
