"""``keys create|list|revoke``, ``runtimes`` and ``up``."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from evalmesh.cli.app import App, pass_app
from evalmesh.cli.options import json_option
from evalmesh.cli.render import key_table, when
from evalmesh.client import ApiKey, Runtime

__all__ = ["keys", "runtimes", "up"]


def _key_dict(key: ApiKey) -> dict[str, object]:
    return {
        "id": key.id,
        "tenant": key.tenant,
        "role": key.role.value,
        "name": key.name,
        "prefix": key.prefix,
        "create_time": when(key.create_time),
        "revoke_time": when(key.revoke_time) if key.revoked else None,
    }


@click.group()
def keys() -> None:
    """Manage API keys (needs an admin key)."""


@keys.command("create")
@click.option("--tenant", required=True, help="The tenant the key acts for.")
@click.option("--role", type=click.Choice(["user", "admin"]), default="user", show_default=True)
@click.option("--name", default="", help="A note on what the key is for.")
@json_option
@pass_app
def create_key(app: App, tenant: str, role: str, name: str, as_json: bool) -> None:
    """Create a key and print its secret, which is shown only this once."""
    created = app.client().create_api_key(tenant, role, name)
    if app.json(as_json):
        app.print_json({**_key_dict(created.key), "secret": created.secret})
        return
    app.note(f"created {created.key.role.value.lower()} key {created.key.id} for {tenant}")
    app.note("its secret follows; it is shown only now:")
    click.echo(created.secret)


@keys.command("list")
@click.option("--tenant", default="", help="Only this tenant's keys.")
@click.option("--revoked", is_flag=True, help="Include revoked keys.")
@json_option
@pass_app
def list_keys(app: App, tenant: str, revoked: bool, as_json: bool) -> None:
    """List API keys, newest first."""
    found = list(app.client().list_api_keys(tenant=tenant, include_revoked=revoked))
    if app.json(as_json):
        app.print_json([_key_dict(key) for key in found])
    else:
        app.out.print(key_table(found))


@keys.command("revoke")
@click.argument("ids", nargs=-1, required=True, metavar="ID...")
@json_option
@pass_app
def revoke_key(app: App, ids: tuple[str, ...], as_json: bool) -> None:
    """Revoke keys at once; calls made with them then fail."""
    revoked = [app.client().revoke_api_key(key_id) for key_id in ids]
    if app.json(as_json):
        app.print_json([_key_dict(key) for key in revoked])
        return
    for key in revoked:
        click.echo(f"{key.id}  revoked")


@click.command()
@json_option
@pass_app
def runtimes(app: App, as_json: bool) -> None:
    """List the runtimes evaluations can use, with their version and packages.

    EXECUTORS counts the healthy executors offering a runtime; with 0, a submit for it is
    refused (RUNTIME_UNAVAILABLE) while other executors are healthy.
    """
    found = app.client().runtimes()
    if app.json(as_json):
        app.print_json([_runtime_dict(item) for item in found])
        return
    table = Table(header_style="bold", box=None, pad_edge=False)
    for column in ("NAME", "EXECUTORS", "VERSION", "DESCRIPTION", "PACKAGES"):
        table.add_column(column)
    for item in found:
        packages = ", ".join(f"{name} {version}" for name, version in item.packages.items())
        table.add_row(
            item.name, str(item.executor_count), item.version, item.description, packages or "-"
        )
    app.out.print(table)


def _runtime_dict(runtime: Runtime) -> dict[str, object]:
    return {
        "name": runtime.name,
        "executors": runtime.executor_count,
        "version": runtime.version,
        "description": runtime.description,
        "digests": runtime.digests,
        "packages": runtime.packages,
    }


@click.command()
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".evalmesh"),
    show_default=True,
    help="Data, logs and the state file.",
)
@click.option("--edge-port", type=int, default=None, help="Envoy edge port (default 8080).")
@click.option("--timeout", type=float, default=90.0, show_default=True, help="Seconds to start.")
def up(state_dir: Path, edge_port: int | None, timeout: float) -> None:
    """Start the whole mesh on this machine and run it until Ctrl-C, restarting a component
    that exits.

    The same as scripts/up without its setup and UI build steps: nats-server, storage,
    scheduler, executor-pool, gateway and Envoy as local processes (Envoy also serves the browser
    UI when clients/web/dist holds a build). Prints the URL and an admin key, and writes
    .evalmesh/mesh.json, where every other command finds the mesh.
    """
    try:
        from evalmesh_deploy.local.__main__ import main as launch
    except ImportError as error:
        raise click.ClickException(
            f"the local launcher is not installed ({error}): pip install 'evalmesh[local]'"
        ) from error
    argv = ["up", "--state-dir", str(state_dir), "--timeout", str(timeout)]
    if edge_port is not None:
        argv += ["--edge-port", str(edge_port)]
    raise SystemExit(launch(argv))
