"""The first Python code of every bwrap sandbox: wait for the job, then become it.

The executor starts the interpreter ahead of demand in a fresh sandbox whose stdin is a pipe,
with a loader for a program (``python3 -I -B -u -c <layout.boot_loader> NOFILE FSIZE``), and
writes this module's code down that pipe, compiled once by the same interpreter; the loader runs
it and calls ``_evalmesh_boot()()``. This code first sets the job's rlimits
(RLIMIT_NOFILE and RLIMIT_FSIZE from its arguments, RLIMIT_CORE 0, hard = soft: no process of
the job can raise them again), then blocks on that pipe until the executor hands the job over:
a header (two big-endian 8-byte lengths), the code, then the job's stdin. It puts the job's
stdin on fd 0 as an in-memory file (immediate end of file when empty, as before), writes
the code to ``/job/main.py`` (a small tmpfs of this sandbox's own: tracebacks show its lines)
and runs it as that script would run (``sys.argv``, ``__file__``, a ``__main__`` holding no
trace of this code). Interpreter start-up is thus off the job's critical path, and a sandbox
started on demand runs exactly the same way as one started ahead: there is one way in.

The job ends as ``python3 /job/main.py`` would end, less the interpreter's own tear-down.
When the code returns or raises, this program does what the interpreter does on its way out
(``Py_RunMain``, ``Py_FinalizeEx``), in its order:
- an uncaught exception goes to ``sys.excepthook`` (its traceback starts at the job's code) and
  makes the status 1; ``SystemExit`` gives its code, or writes its message and gives 1;
- non-daemon threads are waited for, ``atexit`` callbacks run, stdout and stderr are flushed
  (a failed flush of stdout is reported and makes the status 120);
- a collection runs, the standard streams are the original ones again, ``__main__``'s names
  are cleared and another collection runs: the finalizers of the job's own objects run, and a
  file object it never closed is flushed; an uncaught KeyboardInterrupt ends it by SIGINT.
Then the process leaves with ``os._exit``. Freeing every module and object one by one took
about 2.5 ms of the job's wall time and CPU for ``print(1)``, more than the program itself, and
none of it can be seen outside the sandbox, which goes with the job. Like CPython, this promises
no finalizer to objects still reachable from elsewhere at exit (another module, a class);
C-level ``stdio`` is unbuffered (``-u``), so nothing waits there. The interpreter's own objects
from its start-up are frozen (``gc.freeze``) while the sandbox waits, so the collections at the
end look at the job's objects only. The job runs one call deeper than a script would (in this
program's ``run``, below the loader's module frame).

It runs inside the sandbox, as the job, using only what the interpreter loaded at start-up and
``_signal``, ``atexit``, ``gc`` and ``resource``, which it drops from ``sys.modules`` again.
Imported by the executor it only defines: its source is what the sandboxes' interpreters
compile.
"""

from __future__ import annotations

TYPE_CHECKING = False  # the sandbox's interpreter must not import typing or types for this
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

__all__ = ["CODE_FILENAME", "HEADER_BYTES"]

CODE_FILENAME = "/job/main.py"  # core.inside.CODE_FILENAME: the sandbox cannot import it
HEADER_BYTES = 16


def _evalmesh_boot() -> Callable[[], None]:
    import os
    import sys

    loaded = set(sys.modules)
    import _signal  # type: ignore[import-not-found]  # signal's C half: no enum to import
    import atexit
    import gc
    import resource

    limits = (int(sys.argv[1]), int(sys.argv[2]), 0)
    for which, value in zip(
        (resource.RLIMIT_NOFILE, resource.RLIMIT_FSIZE, resource.RLIMIT_CORE), limits, strict=True
    ):
        resource.setrlimit(which, (value, value))
    for module in set(sys.modules) - loaded:
        del sys.modules[module]

    def read_exact(size: int) -> bytes:
        parts = []
        while size:
            part = os.read(0, min(size, 1 << 20))
            if not part:  # the executor is gone or gave up on this sandbox
                os._exit(75)
            parts.append(part)
            size -= len(part)
        return b"".join(parts)

    # An interpreter's first compile() builds the ast module's types (about 0.6 ms): done
    # here, while the sandbox waits, it is off the job's path.
    compile("", "/job/main.py", "exec", dont_inherit=True)
    # What the interpreter made at start-up lives as long as the job: the collection at the
    # end (below) then looks at the job's own objects only (about 1.3 ms less for print(1)).
    gc.freeze()
    header = read_exact(16)  # HEADER_BYTES
    code = read_exact(int.from_bytes(header[:8], "big"))
    stdin = read_exact(int.from_bytes(header[8:], "big"))
    memfd = os.memfd_create("stdin")
    view = memoryview(stdin)
    while view:
        view = view[os.write(memfd, view) :]
    # fd 0 becomes a read-only descriptor of that file (replacing the hand-over pipe).
    readonly = os.open(f"/proc/self/fd/{memfd}", os.O_RDONLY)
    os.dup2(readonly, 0)
    os.close(readonly)
    os.close(memfd)
    del stdin
    name = "/job/main.py"  # CODE_FILENAME
    try:  # /job is 0555 and the job's own: writable just for this
        os.chmod("/job", 0o755)  # noqa: S103 - the job's own directory, in its sandbox
        source = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        view = memoryview(code)
        while view:
            view = view[os.write(source, view) :]
        os.close(source)
        os.chmod("/job", 0o555)  # noqa: S103 - back to read-only
    except OSError:  # no /job here: the code still runs, tracebacks lack its lines
        pass
    sys.argv[:] = [name]
    namespace, sys_cleared = globals(), _SYS_CLEARED  # the module's names go now
    for key in [key for key in namespace if key not in _KEPT]:
        del namespace[key]
    namespace.update(__doc__=None, __file__=name, __cached__=None)
    pending = [code]
    del code
    # What the end needs, held before the job can rebind or unload any of it.
    modules, exit_now, kill, getpid = sys.modules, os._exit, os.kill, os.getpid
    run_exitfuncs, collect, show = atexit._run_exitfuncs, gc.collect, sys.__excepthook__
    builtin_names, write_fd = sys.modules["builtins"].__dict__, os.write
    set_handler, sigint, default = _signal.signal, _signal.SIGINT, _signal.SIG_DFL

    def display(
        kind: type[BaseException], error: BaseException, trace: TracebackType | None
    ) -> int | None:
        """Show an uncaught exception as the interpreter does (PyErr_Print): the status a
        SystemExit raised by sys.excepthook asks for, else None."""
        sys.last_type, sys.last_value, sys.last_traceback = kind, error, trace
        hook = getattr(sys, "excepthook", None)
        if hook is None:
            write_error("sys.excepthook is missing\n")
            show(kind, error, trace)
            return None
        try:
            hook(kind, error, trace)
        except SystemExit as stop:
            return exit_status(stop)
        except BaseException as failure:
            write_error("Error in sys.excepthook:\n")
            show(type(failure), failure, caught(failure))
            write_error("\nOriginal exception was:\n")
            show(kind, error, trace)
        return None

    def exit_status(stop: SystemExit) -> int:
        """The status SystemExit asks for, as the interpreter reads it (a message: 1)."""
        value = stop.code
        if value is None:
            return 0
        if isinstance(value, int):  # the interpreter's C long, as an exit status
            return value & 0xFF if -(2**63) <= value < 2**63 else 0xFF
        try:
            text = str(value)
        except Exception:
            text = ""
        write_error(text + "\n")
        return 1

    def write_error(text: str) -> None:
        stream = getattr(sys, "stderr", None)
        try:
            if stream is not None:
                stream.write(text)
            else:
                write_fd(2, text.encode(errors="backslashreplace"))
        except Exception:  # noqa: S110 - nowhere left to say it
            pass

    def caught(error: BaseException) -> TracebackType | None:
        """The traceback of ``error`` from the frame that raised it: this program's frame,
        where it was caught, is not the job's (the interpreter would catch it in C)."""
        trace = error.__traceback__
        error.__traceback__ = trace.tb_next if trace is not None else None
        return error.__traceback__

    def unraisable(source: object, error: BaseException) -> None:
        """Report an error nobody can catch, as the interpreter does (PyErr_WriteUnraisable)."""
        write_error(f"Exception ignored in: {source!r}\n")
        show(type(error), error, caught(error))

    def flushed() -> bool:
        """Flush stdout and stderr as the interpreter does at exit (flush_std_files)."""
        ok = True
        for which in ("stdout", "stderr"):
            stream = getattr(sys, which, None)
            if stream is None:
                continue
            try:
                closed = bool(stream.closed)
            except Exception:
                closed = False
            if closed:
                continue
            try:
                stream.flush()
            except Exception as error:
                ok = False
                if which == "stdout":
                    unraisable(stream, error)
        return ok

    def forget_special() -> None:
        """Where the interpreter's tear-down starts (finalize_modules_delete_special): the
        places user objects hide go, and the standard streams are the original ones again."""
        builtin_names["_"] = None
        for attribute in sys_cleared:
            setattr(sys, attribute, None)
        for stream in ("stdin", "stdout", "stderr"):
            setattr(sys, stream, getattr(sys, f"__{stream}__", None))

    def clear(names: dict[str, object]) -> None:
        """Clear the job's module as the interpreter does (_PyModule_ClearDict): names with
        one leading underscore first, then every name but ``__builtins__``."""
        texts = [key for key in names if isinstance(key, str)]  # a job can add others
        for key in [k for k in texts if k[:1] == "_" and k[1:2] != "_"] + texts:
            if key != "__builtins__":
                names[key] = None

    def run() -> None:
        """Run the job as its script, then end the process as the interpreter would."""
        status, uncaught = 0, None
        try:
            program = compile(pending.pop(), name, "exec", dont_inherit=True)
            exec(program, namespace)  # noqa: S102 - this is the sandbox: the job is its purpose
        except SystemExit as stop:
            status = exit_status(stop)
        except BaseException as error:
            uncaught = error
        if uncaught is not None:  # shown outside the handler, as from C: no chained context
            asked = display(type(uncaught), uncaught, caught(uncaught))
            status = 1 if asked is None else asked
        threading = modules.get("threading")
        if threading is not None:
            try:
                threading._shutdown()
            except BaseException as error:
                unraisable(threading, error)
        run_exitfuncs()
        ok = flushed()
        collect()
        forget_special()
        clear(namespace)
        collect()
        if not (flushed() and ok):
            status = 120
        if isinstance(uncaught, KeyboardInterrupt):
            set_handler(sigint, default)
            kill(getpid(), sigint)
            status = 128 + sigint
        exit_now(status)

    return run


# The attributes of sys the interpreter sets to None as its tear-down begins.
_SYS_CLEARED = (
    "path",
    "argv",
    "ps1",
    "ps2",
    "last_type",
    "last_value",
    "last_traceback",
    "path_hooks",
    "path_importer_cache",
    "meta_path",
    "__interactivehook__",
)

# What a script's __main__ holds before its first line runs, besides __doc__, __file__ and
# __cached__ (set above); everything else in the namespace is this module's and goes.
_KEPT = frozenset(
    ("__name__", "__builtins__", "__loader__", "__spec__", "__package__", "__annotations__")
)
