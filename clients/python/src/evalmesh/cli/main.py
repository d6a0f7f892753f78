"""The ``evalmesh`` command: global options, the commands, and errors shown without tracebacks."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import click
from click.shell_completion import get_completion_class

from evalmesh.cli import exits
from evalmesh.cli.admin import keys, runtimes, up
from evalmesh.cli.app import App
from evalmesh.cli.batch import batch
from evalmesh.cli.evaluations import cancel, logs, run, status, submit
from evalmesh.cli.listing import ls
from evalmesh.cli.operator import deadletters, executors, purge
from evalmesh.cli.top import top
from evalmesh.client import (
    ConfigurationError,
    EvalmeshError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
    UnavailableError,
)

__all__ = ["cli", "main"]

# The flag a rejected field comes from, so a validation error points at what to change.
_FLAGS = {
    "wall_timeout": "--timeout",
    "memory_bytes": "--memory",
    "max_processes": "--max-processes",
    "max_output_bytes": "--max-output",
    "runtime": "--runtime",
    "priority": "--priority",
    "labels": "--label",
    "request_id": "--request-id",
    "code": "FILE",
    "stdin": "--stdin",
    "reason": "--reason",
    "tenant": "--tenant",
    "display_name": "--name",
}


class _Group(click.Group):
    """Turns the client's errors into one helpful line and a documented exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EvalmeshError as error:
            app = ctx.find_object(App)
            address = app._client.address if app and app._client else "the gateway"
            click.echo(f"evalmesh: {explain(error, address)}", err=True)
            ctx.exit(exit_code_for_error(error))
        except KeyboardInterrupt:
            ctx.exit(exits.CANCELLED)
        except BrokenPipeError:
            # The reader went away (`evalmesh logs ID | head`): stop quietly, as `cat` would.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(exits.SIGNAL_BASE + signal.SIGPIPE)
        finally:
            app = ctx.find_object(App)
            if app is not None:
                app.close()


def explain(error: EvalmeshError, address: str) -> str:
    """The message a user sees for ``error``: what went wrong and what to do about it."""
    if isinstance(error, ConfigurationError) and error.reason == "NO_ADDRESS":
        return (
            "no mesh to talk to: pass --address, set EVALMESH_ADDRESS, put address in the "
            "config file, or start a local mesh with `evalmesh up`."
        )
    if isinstance(error, ConfigurationError) and error.reason == "NO_API_KEY":
        return (
            "no API key: pass --api-key, set EVALMESH_API_KEY, or put api_key in the config file."
        )
    if isinstance(error, ConfigurationError):
        return str(error)
    if isinstance(error, UnavailableError):
        return (
            f"cannot reach evalmesh at {address} ({error.message}).\n"
            "Is the mesh running? Start a local one with `evalmesh up`."
        )
    if isinstance(error, UnauthenticatedError):
        return (
            "the API key was refused (missing, unknown or revoked). "
            "Pass --api-key, set EVALMESH_API_KEY, or use the key `evalmesh up` printed."
        )
    if isinstance(error, PermissionDeniedError):
        hint = "" if "admin" in error.message else " (this needs an admin API key)"
        return f"permission denied: {error.message}{hint}"
    if isinstance(error, NotFoundError):
        return f"not found: {error.message}"
    if isinstance(error, InvalidArgumentError) and error.violations:
        lines = [f"{v.field}{_flag(v.field)}: {v.description}" for v in error.violations]
        separator = " " if len(lines) == 1 else "\n  "
        return "invalid request:" + separator + "\n  ".join(lines)
    return str(error)


def _flag(field: str) -> str:
    leaf = field.rsplit(".", 1)[-1].split("[", 1)[0]
    return f" ({_FLAGS[leaf]})" if leaf in _FLAGS else ""


def exit_code_for_error(error: EvalmeshError) -> int:
    """The documented exit code for a failed call."""
    if isinstance(error, UnavailableError) or error.reason == "NO_ADDRESS":
        return exits.UNREACHABLE
    if isinstance(error, InvalidArgumentError | ConfigurationError):
        return exits.USAGE
    return exits.ERROR


@click.group(cls=_Group, epilog=exits.EXIT_CODES_HELP)
@click.option("--address", metavar="HOST:PORT", help="Gateway address [env: EVALMESH_ADDRESS].")
@click.option("--api-key", metavar="KEY", help="API key [env: EVALMESH_API_KEY].")
@click.option("--tls/--no-tls", default=None, help="Use TLS (default: off, or the config file's).")
@click.option("--root-certificates", metavar="PEM", help="CA bundle for TLS.")
@click.option("--rpc-timeout", type=float, metavar="SECONDS", help="Deadline of each call.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts, on any command.")
@click.version_option("0.1.0", prog_name="evalmesh")
@click.pass_context
def cli(
    ctx: click.Context,
    address: str | None,
    api_key: str | None,
    tls: bool | None,
    root_certificates: str | None,
    rpc_timeout: float | None,
    as_json: bool,
) -> None:
    """Run untrusted Python on evalmesh and watch it live.

    \b
    The mesh and key come from --address/--api-key, else EVALMESH_ADDRESS and
    EVALMESH_API_KEY, else the config file (~/.config/evalmesh/config.toml or
    $EVALMESH_CONFIG), else the local mesh that `evalmesh up` started.
    Shell completion: eval "$(evalmesh completion bash)" (or zsh, fish).
    """
    ctx.obj = App(address, api_key, tls, root_certificates, rpc_timeout, as_json)


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]), default="bash")
def completion(shell: str) -> None:
    """Print the shell completion script: eval "$(evalmesh completion bash)"."""
    cls = get_completion_class(shell)
    assert cls is not None  # click ships all three
    click.echo(cls(cli, {}, "evalmesh", "_EVALMESH_COMPLETE").source())


for _command in (run, submit, status, logs, cancel, ls, batch, top, keys, runtimes, up):
    cli.add_command(_command)
for _command in (deadletters, executors, purge):
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``evalmesh`` console script."""
    try:
        cli.main(args=argv, prog_name="evalmesh", standalone_mode=True)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)


if __name__ == "__main__":
    sys.exit(main())
