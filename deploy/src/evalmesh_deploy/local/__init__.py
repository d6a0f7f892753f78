"""Run the whole evalmesh mesh as local processes (what ``scripts/up`` and ``evalmesh up`` do),
as the catalog (``evalmesh_deploy.catalog``) describes it."""

from evalmesh_deploy.local.mesh import LocalMesh, MeshEndpoints

__all__ = ["LocalMesh", "MeshEndpoints"]
