"""Build a bwrap runtime's package tree: ``python -m evalmesh_executor.treebuild``.

    python -m evalmesh_executor.treebuild --requirements images/python-ml/requirements.txt \\
        --out build/runtimes [--runtime python-ml] [--interpreter /usr/bin/python3]

Installs the pinned wheels (wheels only, nothing compiled here) for the interpreter the sandbox
runs, compiles their bytecode with that interpreter (the sandbox is read-only and runs with
``-B``, so without it every import would compile from source), makes the files read-only,
digests the tree and writes its manifest (``sandbox/tree.py``). The result is
``<out>/<runtime>-<key>/``, and ``<out>/<runtime>`` is a symlink to it, switched atomically.

The key hashes the pins, the interpreter's version and the machine: a second run
with the same key finds the tree and returns at once, so ``scripts/setup`` stays fast. Every
installed distribution must be pinned exactly in the requirements file (the build fails naming
any that is not), so the tree is the same on every machine that builds it. Trees of an older key
are removed once the new one is in place: restart executors started before a rebuild (they
resolved the link at start, and their next sandboxes would mount the removed tree).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from evalmesh_executor.sandbox.bwrap.tree import (
    FORMAT,
    MANIFEST,
    SITE_PACKAGES,
    load_tree,
    tree_digest,
)

__all__ = ["TreeSpec", "build_tree", "main"]

logger = logging.getLogger(__name__)

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)$")
# What the runtime interpreter tells the build about itself (it may differ from the one running
# the build: the workspace venv's interpreter installs, the sandbox's interpreter runs).
_PROBE = """
import json, os, platform, site, sys
print(json.dumps({
    "version": platform.python_version(),
    "python": "%d.%d" % sys.version_info[:2],
    "site_dir": site.getsitepackages()[0],
    "machine": platform.machine(),
    "glibc": os.confstr("CS_GNU_LIBC_VERSION") or "",
}))
"""
_DESCRIPTIONS = {"python-ml": "CPython with numpy, pandas, scikit-learn and scipy"}


@dataclass(frozen=True)
class TreeSpec:
    """What to build: a runtime's name, its pinned requirements and where the tree goes."""

    runtime: str
    requirements: Path
    out: Path
    interpreter: str = "/usr/bin/python3"
    description: str = ""


def _pins(requirements: Path) -> dict[str, str]:
    """Normalised name -> version of every ``name==version`` line; anything else is refused."""
    pins = {}
    for raw in requirements.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _PIN.match(line)
        if match is None:
            raise ValueError(f"{requirements}: {line!r} is not an exact name==version pin")
        pins[_normalise(match[1])] = match[2]
    return pins


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _probe(interpreter: str) -> dict[str, str]:
    done = subprocess.run(
        [interpreter, "-I", "-c", _PROBE], capture_output=True, text=True, check=True, env={}
    )
    facts: dict[str, str] = json.loads(done.stdout)
    return facts


def _key(spec: TreeSpec, facts: dict[str, str]) -> str:
    material = json.dumps(
        {
            "format": FORMAT,
            "runtime": spec.runtime,
            "pins": sorted(_pins(spec.requirements).items()),
            "python": facts["python"],
            "machine": facts["machine"],
            "site_dir": facts["site_dir"],
        },
        sort_keys=True,
    )
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def _platforms(facts: dict[str, str]) -> list[str]:
    """Every manylinux tag the host's C library accepts (pip does not widen a given tag)."""
    machine = facts["machine"]
    _, _, version = facts["glibc"].partition(" ")
    major, _, minor = version.partition(".")
    newest = int(minor) if major == "2" and minor.isdigit() else 17
    tags = [f"manylinux_2_{m}_{machine}" for m in range(newest, 16, -1)]
    return [*tags, f"manylinux2014_{machine}"]


def _pip_install(spec: TreeSpec, facts: dict[str, str], target: Path, report: Path) -> None:
    python = facts["python"]
    abi = "cp" + python.replace(".", "")
    argv = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "--no-input", "--no-compile", "--only-binary=:all:", "--no-warn-script-location",
        "--python-version", python, "--implementation", "cp", "--abi", abi,
        "--target", str(target), "--report", str(report), "--requirement", str(spec.requirements),
    ]  # fmt: skip
    for platform in _platforms(facts):
        argv += ["--platform", platform]
    subprocess.run(argv, check=True)


def _installed(report: Path, pins: dict[str, str]) -> list[dict[str, str]]:
    """The distributions pip installed, checked against the pins."""
    installed = json.loads(report.read_text(encoding="utf-8"))["install"]
    packages = sorted(
        (_normalise(item["metadata"]["name"]), item["metadata"]["version"]) for item in installed
    )
    unpinned = [f"{name}=={version}" for name, version in packages if pins.get(name) != version]
    if unpinned:
        raise ValueError(f"installed but not pinned: {', '.join(unpinned)}; pin them")
    return [{"name": name, "version": version} for name, version in packages]


def _compile(interpreter: str, site_packages: Path, site_dir: str) -> None:
    """Bytecode for the runtime's interpreter, recorded under the path the sandbox sees and
    valid whatever the files' times (unchecked-hash)."""
    argv = [
        interpreter, "-I", "-m", "compileall", "-q", "-j", "0",
        "--invalidation-mode", "unchecked-hash",
        "-s", str(site_packages), "-p", site_dir, str(site_packages),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, env={})
    if done.returncode != 0:  # a stray file of a package that does not parse: it is never imported
        logger.warning("compileall reported errors: %s", done.stdout[-500:])


def _read_only(root: Path) -> tuple[int, int]:
    """Make everything read-only (directories 0555, files 0444 or 0555); return files, bytes."""
    files = size = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath, name)
            info = path.lstat()
            if path.is_symlink():
                continue
            path.chmod(0o555 if info.st_mode & 0o111 else 0o444)
            files += 1
            size += info.st_size
        for name in dirnames:
            Path(dirpath, name).chmod(0o555)
    root.chmod(0o555)
    return files, size


def _writable(root: Path) -> None:
    """Give the owner write access again, so the tree can be removed by a non-root owner too."""
    if root.is_symlink() or not root.exists():
        return
    root.chmod(0o755)
    for dirpath, dirnames, _ in os.walk(root):
        for name in dirnames:
            with contextlib.suppress(OSError):
                Path(dirpath, name).chmod(0o755)


def _remove(path: Path) -> None:
    _writable(path)
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    out.mkdir(parents=True, exist_ok=True)
    with (out / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _current(spec: TreeSpec, key: str) -> Path | None:
    link = spec.out / spec.runtime
    try:
        tree = load_tree(link, spec.runtime)
        manifest = json.loads((tree.path / MANIFEST).read_text(encoding="utf-8"))
    except Exception:  # missing, half-built or of an older format: build it
        return None
    return tree.path if manifest.get("key") == key else None


def _switch(spec: TreeSpec, built: Path) -> None:
    """Point ``<out>/<runtime>`` at ``built`` atomically, then remove older trees."""
    link = spec.out / spec.runtime
    temporary = spec.out / f".{spec.runtime}.link-{os.getpid()}"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(built.name)
    if link.is_dir() and not link.is_symlink():
        _remove(link)
    os.replace(temporary, link)
    # Only this runtime's trees and build leftovers (another runtime's name may share a prefix).
    mine = re.compile(rf"\.?{re.escape(spec.runtime)}-[0-9a-f]{{16}}(\..*)?")
    for other in spec.out.iterdir():
        if other.name != built.name and mine.fullmatch(other.name):
            _remove(other)


def build_tree(spec: TreeSpec) -> Path:
    """Build (or find) the tree; return its directory."""
    facts = _probe(spec.interpreter)
    key = _key(spec, facts)
    with _locked(spec.out):
        current = _current(spec, key)
        if current is not None:
            logger.info("%s is up to date (%s)", spec.runtime, current)
            return current
        started = time.monotonic()
        work = Path(tempfile.mkdtemp(prefix=f".{spec.runtime}-{key}.", dir=spec.out))
        site_packages = work / SITE_PACKAGES
        _pip_install(spec, facts, site_packages, work / "report.json")
        packages = _installed(work / "report.json", _pins(spec.requirements))
        (work / "report.json").unlink()
        shutil.rmtree(site_packages / "bin", ignore_errors=True)  # scripts for the wrong python
        _compile(spec.interpreter, site_packages, facts["site_dir"])
        files, size = _read_only(site_packages)
        manifest = {
            "format": FORMAT,
            "runtime": spec.runtime,
            "description": spec.description or _DESCRIPTIONS.get(spec.runtime, ""),
            "key": key,
            "python": facts["python"],
            "built_with": facts["version"],
            "site_dir": facts["site_dir"],
            "packages": packages,
            "digest": tree_digest(site_packages),
            "files": files,
            "bytes": size,
        }
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        (work / MANIFEST).chmod(0o444)
        work.chmod(0o555)
        built = spec.out / f"{spec.runtime}-{key}"
        _remove(built)
        work.rename(built)
        _switch(spec, built)
        logger.info(
            "built %s in %.0f s: %d files, %.0f MiB, %s",
            spec.runtime,
            time.monotonic() - started,
            files,
            size / 2**20,
            manifest["digest"],
        )
        return built


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; exit status 0 when the tree is built or already was."""
    parser = argparse.ArgumentParser(prog="python -m evalmesh_executor.treebuild")
    parser.add_argument("--runtime", default="python-ml")
    parser.add_argument("--requirements", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="e.g. build/runtimes")
    parser.add_argument("--interpreter", default="/usr/bin/python3")
    parser.add_argument("--description", default="")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="treebuild: %(message)s")
    spec = TreeSpec(
        args.runtime, args.requirements, args.out.resolve(), args.interpreter, args.description
    )
    try:
        build_tree(spec)
    except (OSError, ValueError, subprocess.CalledProcessError) as exc:
        logger.error("could not build %s: %s", spec.runtime, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
