"""Run the whole evalmesh mesh as local processes (what ``scripts/up`` and ``evalmesh up`` do)."""

from evalmesh.local.mesh import SERVICES, LocalMesh, MeshEndpoints

__all__ = ["SERVICES", "LocalMesh", "MeshEndpoints"]
