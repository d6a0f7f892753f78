"""The whole mesh for tests, started by the local launcher as ``scripts/up`` starts it: NATS, the
four services and Envoy, every port chosen free, and the first admin key made in storage."""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path

from evalmesh_deploy.local.bootstrap import create_admin_key
from evalmesh_deploy.local.mesh import LocalMesh

__all__ = ["mesh_for_tests", "running_mesh"]


def mesh_for_tests(
    state_dir: Path,
    env: Mapping[str, str] | None = None,
    without: Collection[str] = (),
    tls: bool = False,
) -> LocalMesh:
    """A mesh for tests, not started yet: the edge on a free port, the first admin key made at
    start, ``env`` given to every service, the services ``without`` left out."""
    return LocalMesh(
        state_dir,
        edge_port=0,
        extra_env=env,
        bootstrap_key=create_admin_key,
        without=without,
        tls=tls,
    )


@contextlib.contextmanager
def running_mesh(
    state_dir: Path,
    env: Mapping[str, str] | None = None,
    without: Collection[str] = (),
    tls: bool = False,
    timeout: float = 120,
) -> Iterator[LocalMesh]:
    """A started mesh for tests (see ``mesh_for_tests``), stopped by pid when the block ends,
    even when it failed to start."""
    mesh = mesh_for_tests(state_dir, env, without, tls)
    try:
        mesh.start(timeout=timeout)
        yield mesh
    finally:
        mesh.stop()
