"""Package trees: the extra packages of a bwrap runtime, built ahead and mounted read-only.

A tree is a directory built once by ``evalmesh_executor.treebuild`` (``scripts/setup`` runs it):
``site-packages/`` holds the packages, installed for the host's runtime interpreter, with their
bytecode compiled ahead (the sandbox cannot write any); ``manifest.json`` says which runtime it
is, for which interpreter version, where inside the sandbox it belongs (a site directory the
interpreter searches even with ``-I``), which distributions it holds, and the tree's digest,
computed once at build. The executor reads the manifest and never hashes the tree itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalmesh_executor.sandbox.core.models import Package, SandboxUnavailableError

__all__ = [
    "FORMAT",
    "MANIFEST",
    "SITE_PACKAGES",
    "PackageTree",
    "load_tree",
    "tree_digest",
]

FORMAT = 1
MANIFEST = "manifest.json"
SITE_PACKAGES = "site-packages"


@dataclass(frozen=True, slots=True)
class PackageTree:
    """A built tree, as its manifest describes it.

    path: the tree's directory on the host (symlinks resolved: a rebuild never changes it).
    python: the interpreter's ``major.minor`` the packages were installed for.
    site_dir: where the packages go inside the sandbox (a site directory of that interpreter).
    digest: ``sha256:<hex>`` of the whole of site-packages (see ``tree_digest``).
    """

    runtime: str
    path: Path
    description: str
    python: str
    site_dir: str
    packages: tuple[Package, ...]
    digest: str

    @property
    def site_packages(self) -> Path:
        """The host directory bound at ``site_dir``."""
        return self.path / SITE_PACKAGES


def load_tree(path: str | os.PathLike[str], runtime: str) -> PackageTree:
    """Read and check the tree at ``path`` built for ``runtime``.

    Raises SandboxUnavailableError saying what is wrong (missing, another runtime's, an unknown
    manifest format), so the executor can leave the runtime out with that reason.
    """
    root = Path(os.path.realpath(path))
    try:
        manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SandboxUnavailableError(
            f"no package tree at {path} (scripts/setup builds it)"
        ) from exc
    except (OSError, ValueError) as exc:
        raise SandboxUnavailableError(f"unreadable manifest in {path}: {exc}") from exc
    tree = _parse(manifest, root)
    if tree.runtime != runtime:
        raise SandboxUnavailableError(f"the tree at {path} is {tree.runtime!r}, not {runtime!r}")
    if not tree.site_packages.is_dir():
        raise SandboxUnavailableError(f"the tree at {path} has no {SITE_PACKAGES} directory")
    return tree


def _parse(manifest: Any, root: Path) -> PackageTree:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise SandboxUnavailableError(f"the manifest in {root} is not format {FORMAT}: rebuild it")
    try:
        site_dir = str(manifest["site_dir"])
        digest = str(manifest["digest"])
        packages = tuple(Package(str(p["name"]), str(p["version"])) for p in manifest["packages"])
        tree = PackageTree(
            runtime=str(manifest["runtime"]),
            path=root,
            description=str(manifest.get("description", "")),
            python=str(manifest["python"]),
            site_dir=site_dir,
            packages=packages,
            digest=digest,
        )
    except (KeyError, TypeError) as exc:
        raise SandboxUnavailableError(f"the manifest in {root} lacks {exc}") from exc
    if not os.path.isabs(site_dir) or not digest.startswith("sha256:"):
        raise SandboxUnavailableError(f"the manifest in {root} is malformed")
    return tree


def _entries(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """Every path under root (relative, sorted, depth first), with its lstat."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(dirpath)
        for name in sorted(dirnames + filenames):
            full = base / name
            yield str(full.relative_to(root)), full.lstat()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        for block in iter(lambda: source.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_digest(root: str | os.PathLike[str]) -> str:
    """``sha256:<hex>`` over every path under ``root``: its kind, the executable bit of files,
    the contents of files and the targets of links. Owners, times and other mode bits are left
    out, so the same packages give the same digest wherever they were copied."""
    outer = hashlib.sha256()
    base = Path(root)
    for relative, info in _entries(base):
        if stat.S_ISDIR(info.st_mode):
            line = f"d - {relative}"
        elif stat.S_ISLNK(info.st_mode):
            line = f"l {os.readlink(base / relative)} {relative}"
        elif stat.S_ISREG(info.st_mode):
            executable = "x" if info.st_mode & 0o111 else "-"
            line = f"f {executable} {_file_sha256(base / relative)} {relative}"
        else:
            raise ValueError(f"{relative}: not a file, directory or link")
        outer.update(line.encode("utf-8", "surrogateescape") + b"\n")
    return f"sha256:{outer.hexdigest()}"
