"""LocalMesh's choice of services and the environment each is given, checked before anything
starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from evalmesh_deploy.catalog import SERVICES
from evalmesh_deploy.local import LocalMesh


def test_a_mesh_without_the_executor_starts_every_other_service_in_order(tmp_path: Path) -> None:
    mesh = LocalMesh(tmp_path, without=("executor-pool",))
    assert [spec.name for spec in mesh.services] == ["storage", "scheduler", "gateway"]
    assert LocalMesh(tmp_path).services == SERVICES


def test_leaving_out_a_service_another_needs_or_an_unknown_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="scheduler needs storage"):
        LocalMesh(tmp_path, without=("storage",))
    with pytest.raises(ValueError, match="unknown services: executor"):
        LocalMesh(tmp_path, without="executor")


def test_each_service_is_told_where_its_needs_listen_and_storage_where_its_database_is(
    tmp_path: Path,
) -> None:
    mesh = LocalMesh(tmp_path, extra_env={"EVALMESH_PROBE_INTERVAL": "0.2"})
    mesh.endpoints.nats = "nats://127.0.0.1:4001"
    mesh.endpoints.services.update(storage="127.0.0.1:4002", scheduler="127.0.0.1:4003")
    env = {spec.name: mesh._service_env(spec) for spec in SERVICES}
    assert env["gateway"]["EVALMESH_NATS_URL"] == "nats://127.0.0.1:4001"
    assert env["gateway"]["EVALMESH_STORAGE_ADDRESS"] == "127.0.0.1:4002"
    assert env["gateway"]["EVALMESH_SCHEDULER_ADDRESS"] == "127.0.0.1:4003"
    assert "EVALMESH_SCHEDULER_ADDRESS" not in env["executor-pool"]
    assert env["executor-pool"]["EVALMESH_INSTANCE_ID"] == "executor-pool-1"
    database = f"sqlite+aiosqlite:///{tmp_path / 'evalmesh.db'}"
    assert env["storage"]["EVALMESH_DATABASE_URL"] == database
    for name, settings in env.items():
        assert settings["EVALMESH_LISTEN_ADDRESS"] == "127.0.0.1:0", name
        assert settings["EVALMESH_PROBE_INTERVAL"] == "0.2", name
