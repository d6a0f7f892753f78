"""``run``, ``submit``, ``status``, ``logs`` and ``cancel``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from evalmesh.cli.app import App, pass_app, stderr_bytes, stdout_bytes
from evalmesh.cli.exits import CANCELLED, EXIT_CODES_HELP, exit_code_for
from evalmesh.cli.options import json_option, labels_of, spec_options
from evalmesh.cli.render import details
from evalmesh.client import Client, Evaluation, Output, Snapshot, State, Stream

__all__ = ["cancel", "logs", "run", "status", "submit"]

_QUIET_STATES = (State.SUCCEEDED, State.FAILED)


def read_code(source: str | None, code: str | None, stdin_path: str | None = None) -> str:
    """The program: ``-c CODE``, the file ``source``, or standard input for ``-``."""
    if code is not None:
        if source is not None:
            raise click.UsageError("give either FILE or -c CODE, not both")
        return code
    if source is None:
        raise click.UsageError("give a FILE to run ('-' for standard input) or -c CODE")
    if source == "-" and stdin_path == "-":
        raise click.UsageError("standard input cannot be both the code (-) and --stdin -")
    if source == "-":
        return sys.stdin.read()
    try:
        return Path(source).read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise click.BadParameter(f"cannot read {source}: {error}", param_hint="FILE") from error


def read_stdin(path: str | None) -> bytes:
    """The bytes ``--stdin`` names: a file, or this terminal's standard input for ``-``."""
    if path is None:
        return b""
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise click.BadParameter(str(error), param_hint="--stdin") from error


def spec_kwargs(options: dict[str, Any]) -> dict[str, Any]:
    """The client's keyword arguments for the spec flags of a command."""
    return {
        "timeout": options["timeout"],
        "memory": options["memory"],
        "max_processes": options["max_processes"],
        "max_output": options["max_output"],
        "priority": options["priority"],
        "runtime": options["runtime"],
        "labels": labels_of(options["labels"]),
    }


def _program_options(function: Any) -> Any:
    for option in reversed(
        [
            click.argument("source", metavar="FILE|-", required=False),
            click.option("-c", "--code", help="Run this code instead of a FILE."),
            click.option("--stdin", "stdin_path", metavar="PATH|-", help="Feed this to stdin."),
            click.option("--request-id", help="Idempotency key (default: a random UUID)."),
            spec_options,
            json_option,
        ]
    ):
        function = option(function)
    return function


@click.command(epilog=EXIT_CODES_HELP)
@_program_options
@pass_app
def run(
    app: App,
    /,
    source: str | None,
    code: str | None,
    stdin_path: str | None,
    request_id: str | None,
    as_json: bool,
    **options: Any,
) -> None:
    """Run a Python FILE (or - for stdin) and stream its output live.

    The program's stdout and stderr go to this terminal's stdout and stderr, byte for byte, and
    evalmesh exits with the program's exit status. Ctrl-C cancels the evaluation.
    """
    client = app.client()
    created = client.submit(
        read_code(source, code, stdin_path),
        stdin=read_stdin(stdin_path),
        request_id=request_id,
        **spec_kwargs(options),
    )
    try:
        final = _follow(app, client, created.id, stream=not app.json(as_json))
    except KeyboardInterrupt:
        final = _cancel(app, client, created.id)
    json_mode = app.json(as_json)
    if json_mode:
        app.print_json(final.to_dict())
    elif final.state not in _QUIET_STATES or final.signal:
        app.note(f"evalmesh: {final.id} {final.state.value}" + _why(final))
    raise SystemExit(exit_code_for(final))


def _follow(app: App, client: Client, evaluation_id: str, stream: bool) -> Evaluation:
    """Copy the output to this terminal as it comes; return the evaluation once it ends."""
    attempt = 0
    for event in client.watch(evaluation_id):
        if isinstance(event, Output):
            if stream:
                _write_output(event)
            continue
        if attempt and event.evaluation.attempt > attempt:
            app.note(
                f"evalmesh: a platform fault interrupted {evaluation_id}; it runs again "
                f"(attempt {event.evaluation.attempt}) and its output starts over"
            )
        attempt = max(attempt, event.evaluation.attempt)
    return client.get(evaluation_id)


def _cancel(app: App, client: Client, evaluation_id: str) -> Evaluation:
    """Ctrl-C: cancel the evaluation and wait (a second Ctrl-C stops waiting) for it to end."""
    client.cancel(evaluation_id, reason="interrupted in the evalmesh CLI")
    app.note(f"evalmesh: cancelling {evaluation_id} (Ctrl-C again to stop waiting)")
    try:
        return client.wait(evaluation_id)
    except KeyboardInterrupt:
        raise SystemExit(CANCELLED) from None


def _write_output(output: Output) -> None:
    (stdout_bytes if output.stream is Stream.STDOUT else stderr_bytes)(output.data)


def _why(evaluation: Evaluation) -> str:
    return f": {evaluation.detail}" if evaluation.detail else ""


@click.command()
@_program_options
@pass_app
def submit(
    app: App,
    /,
    source: str | None,
    code: str | None,
    stdin_path: str | None,
    request_id: str | None,
    as_json: bool,
    **options: Any,
) -> None:
    """Queue a Python FILE (or - for stdin) and print its id without waiting."""
    created = app.client().submit(
        read_code(source, code, stdin_path),
        stdin=read_stdin(stdin_path),
        request_id=request_id,
        **spec_kwargs(options),
    )
    if app.json(as_json):
        app.print_json(created.to_dict())
    else:
        click.echo(created.id)


@click.command()
@click.argument("ids", nargs=-1, required=True, metavar="ID...")
@json_option
@pass_app
def status(app: App, ids: tuple[str, ...], as_json: bool) -> None:
    """Show the state and result of evaluations (--json: an object, or a list for several)."""
    found = [app.client().get(evaluation_id, full=False) for evaluation_id in ids]
    if app.json(as_json):
        app.print_json([item.to_dict() for item in found] if len(ids) > 1 else found[0].to_dict())
        return
    for index, evaluation in enumerate(found):
        if index:
            click.echo()
        width = max(len(key) for key, _ in details(evaluation))
        for key, value in details(evaluation):
            click.echo(f"{key:<{width}}  {value}")


@click.command()
@click.argument("evaluation_id", metavar="ID")
@click.option("-f", "--follow", is_flag=True, help="Stream output live until the evaluation ends.")
@json_option
@pass_app
def logs(app: App, evaluation_id: str, follow: bool, as_json: bool) -> None:
    """Print an evaluation's stdout and stderr (to this terminal's stdout and stderr)."""
    client = app.client()
    json_mode = app.json(as_json)
    if not follow:
        evaluation = client.get(evaluation_id)
        if json_mode:
            app.print_json({"id": evaluation.id, **_output_dict(evaluation)})
        else:
            stdout_bytes(evaluation.stdout)
            stderr_bytes(evaluation.stderr)
        return
    for event in client.watch(evaluation_id):
        if json_mode:
            click.echo(_event_json(event))
        elif isinstance(event, Output):
            _write_output(event)


def _output_dict(evaluation: Evaluation) -> dict[str, Any]:
    data = evaluation.to_dict()
    return {key: data[key] for key in ("state", "stdout", "stderr")}


def _event_json(event: Snapshot | Output) -> str:
    if isinstance(event, Output):
        text = event.data.decode("utf-8", errors="replace")
        data: dict[str, Any] = {"stream": event.stream.value, "offset": event.offset, "data": text}
    else:
        data = {"state": event.state.value, "evaluation": event.evaluation.to_dict()}
    return json.dumps(data, default=str)


@click.command()
@click.argument("ids", nargs=-1, required=True, metavar="ID...")
@click.option("--reason", default="", help="A note recorded with the cancellation.")
@json_option
@pass_app
def cancel(app: App, ids: tuple[str, ...], reason: str, as_json: bool) -> None:
    """Cancel evaluations: queued ones end at once, running ones within a second."""
    results = [app.client().cancel(evaluation_id, reason=reason) for evaluation_id in ids]
    if app.json(as_json):
        app.print_json([item.to_dict() for item in results])
        return
    for item in results:
        pending = " (stopping)" if item.cancel_requested and not item.terminal else ""
        click.echo(f"{item.id}  {item.state.value}{pending}")
