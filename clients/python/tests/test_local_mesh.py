"""LocalMesh's choice of services, checked before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from evalmesh.local import SERVICES, LocalMesh


def test_a_mesh_without_the_executor_starts_every_other_service_in_order(tmp_path: Path) -> None:
    mesh = LocalMesh(tmp_path, without=("executor-pool",))
    assert [spec.name for spec in mesh.services] == ["storage", "scheduler", "gateway"]
    assert LocalMesh(tmp_path).services == SERVICES


def test_leaving_out_a_service_another_needs_or_an_unknown_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="scheduler needs storage"):
        LocalMesh(tmp_path, without=("storage",))
    with pytest.raises(ValueError, match="unknown services: executor"):
        LocalMesh(tmp_path, without="executor")
