"""``run``, ``submit``, ``status``, ``logs`` and ``cancel``."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

import click

from evalmesh.cli.app import App, pass_app
from evalmesh.cli.exits import CANCELLED, EXIT_CODES_HELP, exit_code_for
from evalmesh.cli.options import json_option, labels_of, raw_option, spec_options
from evalmesh.cli.render import details
from evalmesh.cli.terminal import ProgramOutput
from evalmesh.client import Client, Evaluation, Output, OutputDecoder, Snapshot, State, Stream

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
@raw_option
@pass_app
def run(
    app: App,
    /,
    source: str | None,
    code: str | None,
    stdin_path: str | None,
    request_id: str | None,
    as_json: bool,
    raw: bool,
    **options: Any,
) -> None:
    """Run a Python FILE (or - for stdin) and stream its output live.

    The program's stdout and stderr go to this process's stdout and stderr: byte for byte into a
    pipe or file (or with --raw); on a terminal, control, bidi and invisible characters show as
    escapes such as \\x1b, so the output cannot drive the terminal. evalmesh exits with the
    program's exit status. Ctrl-C cancels the evaluation.
    """
    client = app.client()
    program, stdin = read_code(source, code, stdin_path), read_stdin(stdin_path)
    spec = {"stdin": stdin, "request_id": request_id or str(uuid.uuid4()), **spec_kwargs(options)}
    json_mode = app.json(as_json)
    output = None if json_mode else ProgramOutput(raw)
    follow = _Follow(app, output)
    try:
        for event in client.stream(program, **spec):  # queued and followed in one call
            follow.take(event)
        final = client.get(follow.evaluation_id)
    except KeyboardInterrupt:
        # Before the first event the id is unknown: the request_id finds (or makes) it.
        evaluation_id = follow.evaluation_id or client.submit(program, **spec).id
        final = _cancel(app, client, evaluation_id)
    if json_mode:
        app.print_json(final.to_dict())
        raise SystemExit(exit_code_for(final))
    if output is not None:
        output.end(final)
    if final.state not in _QUIET_STATES or final.signal:
        app.note(f"evalmesh: {final.id} {final.state.value}" + _why(final))
    raise SystemExit(exit_code_for(final))


class _Follow:
    """Copies a followed evaluation's output here as it comes, and keeps its last snapshot."""

    def __init__(self, app: App, output: ProgramOutput | None) -> None:
        self._app = app
        self._output = output
        self.last: Evaluation | None = None

    @property
    def evaluation_id(self) -> str:
        """The evaluation's id, once its first snapshot came ("" before)."""
        return self.last.id if self.last is not None else ""

    def take(self, event: Snapshot | Output) -> None:
        """Take the next event of a watch."""
        output, last = self._output, self.last
        if isinstance(event, Output):
            if output is not None:
                output.write(event.stream, event.data)
            return
        if last and event.evaluation.attempt > last.attempt > 0:
            self._app.note(
                f"evalmesh: a platform fault interrupted {last.id}; it runs again "
                f"(attempt {event.evaluation.attempt}) and its output starts over"
            )
            if output is not None:
                output.restart()
        self.last = event.evaluation


def _follow(
    app: App, client: Client, evaluation_id: str, output: ProgramOutput | None
) -> Evaluation | None:
    """Copy the output here as it comes; return the last snapshot's evaluation once it ends."""
    follow = _Follow(app, output)
    for event in client.watch(evaluation_id):
        follow.take(event)
    return follow.last


def _cancel(app: App, client: Client, evaluation_id: str) -> Evaluation:
    """Ctrl-C: cancel the evaluation and wait (a second Ctrl-C stops waiting) for it to end."""
    client.cancel(evaluation_id, reason="interrupted in the evalmesh CLI")
    app.note(f"evalmesh: cancelling {evaluation_id} (Ctrl-C again to stop waiting)")
    try:
        return client.wait(evaluation_id)
    except KeyboardInterrupt:
        raise SystemExit(CANCELLED) from None


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
@raw_option
@json_option
@pass_app
def logs(app: App, evaluation_id: str, follow: bool, raw: bool, as_json: bool) -> None:
    """Print an evaluation's stdout and stderr (to this process's stdout and stderr).

    Byte for byte into a pipe or file (or with --raw); on a terminal, control, bidi and invisible
    characters show as escapes such as \\x1b. --json prints the output as text, and with
    --follow one JSON object per line: {"stream", "offset", "data"} for output (offset is the
    byte where data starts) and {"state", "evaluation"} for state changes.
    """
    client = app.client()
    json_mode = app.json(as_json)
    if not follow:
        evaluation = client.get(evaluation_id)
        if json_mode:
            app.print_json({"id": evaluation.id, **_output_dict(evaluation)})
            return
        output = ProgramOutput(raw)
        output.write(Stream.STDOUT, evaluation.stdout)
        output.write(Stream.STDERR, evaluation.stderr)
        output.end(evaluation)
        return
    if json_mode:
        lines = _JsonLines()
        for event in client.watch(evaluation_id):
            for line in lines.of(event):
                click.echo(line)
        return
    output = ProgramOutput(raw)
    last = _follow(app, client, evaluation_id, output)
    if last is not None:
        output.end(last)


def _output_dict(evaluation: Evaluation) -> dict[str, Any]:
    data = evaluation.to_dict()
    return {key: data[key] for key in ("state", "stdout", "stderr")}


class _JsonLines:
    """Watch events as JSON lines; a character split between chunks comes out whole, once."""

    def __init__(self) -> None:
        self._attempt = 0
        self._streams = {stream: _JsonStream(stream) for stream in (Stream.STDOUT, Stream.STDERR)}

    def of(self, event: Snapshot | Output) -> list[str]:
        if isinstance(event, Output):
            return self._streams[event.stream].chunk(event)
        evaluation = event.evaluation
        if evaluation.attempt > self._attempt > 0:
            for stream in self._streams.values():
                stream.end(cut=True)  # output starts over; the old attempt's is abandoned
        self._attempt = evaluation.attempt
        lines: list[str] = []
        if evaluation.terminal:
            lines += self._streams[Stream.STDOUT].end(evaluation.stdout_truncated)
            lines += self._streams[Stream.STDERR].end(evaluation.stderr_truncated)
        snapshot = {"state": event.state.value, "evaluation": evaluation.to_dict()}
        return [*lines, json.dumps(snapshot, default=str)]


class _JsonStream:
    """One stream's output events, each holding the text of the whole characters it completes."""

    def __init__(self, stream: Stream) -> None:
        self._stream = stream
        self._decoder = OutputDecoder()
        self._end = 0

    def chunk(self, output: Output) -> list[str]:
        start = output.offset - self._decoder.pending
        text = self._decoder.decode(output.data)
        self._end = output.offset + len(output.data)
        return self._line(start, text)

    def end(self, cut: bool) -> list[str]:
        start = self._end - self._decoder.pending
        self._end = 0
        return self._line(start, self._decoder.end(cut))

    def _line(self, offset: int, text: str) -> list[str]:
        if not text:
            return []
        data = {"stream": self._stream.value, "offset": offset, "data": text}
        return [json.dumps(data)]


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
