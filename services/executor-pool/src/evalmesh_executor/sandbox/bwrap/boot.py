"""The first Python code of every bwrap sandbox: wait for the job, then become it.

The executor starts the interpreter ahead of demand (``python3 -I -B -u -c <this file> NOFILE
FSIZE``) in a fresh sandbox whose stdin is a pipe. This code first sets the job's rlimits
(RLIMIT_NOFILE and RLIMIT_FSIZE from its arguments, RLIMIT_CORE 0, hard = soft: no process of
the job can raise them again), then blocks on that pipe until the executor hands the job over:
a header (two big-endian 8-byte lengths), the code, then the job's stdin. It puts the job's
stdin on fd 0 as an in-memory file (immediate end of file when empty, as before), writes
the code to ``/job/main.py`` (a small tmpfs of this sandbox's own: tracebacks show its lines)
and runs it as that script would run (``sys.argv``, ``__file__``, a ``__main__`` holding no
trace of this code). Interpreter start-up is thus off the job's critical path, and a sandbox
started on demand runs exactly the same way as one started ahead: there is one way in.

It runs inside the sandbox, as the job, using only what the interpreter loaded at start-up, and
``resource``, which it drops from ``sys.modules`` again. When run as the executor's module it
does nothing: its source is what the sandbox gets.
"""

from __future__ import annotations

TYPE_CHECKING = False  # the sandbox's interpreter must not import typing or types for this
if TYPE_CHECKING:
    from types import CodeType

__all__ = ["CODE_FILENAME", "HEADER_BYTES"]

CODE_FILENAME = "/job/main.py"  # core.inside.CODE_FILENAME: the sandbox cannot import it
HEADER_BYTES = 16


def _evalmesh_boot() -> CodeType:
    import os
    import resource
    import sys

    limits = (int(sys.argv[1]), int(sys.argv[2]), 0)
    for which, value in zip(
        (resource.RLIMIT_NOFILE, resource.RLIMIT_FSIZE, resource.RLIMIT_CORE), limits, strict=True
    ):
        resource.setrlimit(which, (value, value))
    del sys.modules["resource"]

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
    namespace = globals()
    for key in [key for key in namespace if key not in _KEPT]:
        del namespace[key]
    namespace.update(__doc__=None, __file__=name, __cached__=None)
    return compile(code, name, "exec", dont_inherit=True)


# What a script's __main__ holds before its first line runs, besides __doc__, __file__ and
# __cached__ (set above); everything else in the namespace is this module's and goes.
_KEPT = frozenset(
    ("__name__", "__builtins__", "__loader__", "__spec__", "__package__", "__annotations__")
)


if __name__ == "__main__":
    exec(_evalmesh_boot())  # noqa: S102 - this is the sandbox: running the job is its purpose
