"""The executor's docker settings: parsed from the environment once, and what the docker
backend is built with (no engine needed: building does not connect)."""

from __future__ import annotations

import pytest

from evalmesh_common import ConfigError, load_config
from evalmesh_executor.backend import factories
from evalmesh_executor.config import ExecutorConfig
from evalmesh_executor.sandbox import SandboxLimits
from evalmesh_executor.sandbox.docker import DEFAULT_IMAGES, DockerSandbox

REQUIRED = {"EVALMESH_NATS_URL": "nats://127.0.0.1:4222", "EVALMESH_STORAGE_ADDRESS": "x:1"}
MiB = 1024 * 1024


def _config(**env: str) -> ExecutorConfig:
    return load_config(ExecutorConfig, {**REQUIRED, **env})


def test_by_default_the_engine_is_the_sdks_and_one_container_per_slot_waits_warm() -> None:
    config = _config(EVALMESH_EXECUTOR_SLOTS="3")
    assert config.docker.host is None
    assert config.docker.image_overrides() == {}
    assert config.docker.warm_per_runtime(config.slots) == 3
    assert config.docker.warm_max_idle == 300.0


def test_docker_variables_set_the_engine_images_and_warm_pool() -> None:
    config = _config(
        EVALMESH_DOCKER_HOST="tcp://10.0.0.5:2375",
        EVALMESH_DOCKER_IMAGES="python=ops/rt-python:7 , python-ml=, r=rt-r:1",
        EVALMESH_DOCKER_WARM="0",
        EVALMESH_DOCKER_WARM_MAX_IDLE="90s",
    )
    docker = config.docker
    assert docker.host == "tcp://10.0.0.5:2375"
    assert docker.image_overrides() == {
        "python": "ops/rt-python:7",
        "python-ml": "",
        "r": "rt-r:1",
    }
    assert docker.warm_per_runtime(config.slots) == 0
    assert docker.warm_max_idle == 90.0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("EVALMESH_DOCKER_IMAGES", "python"),
        ("EVALMESH_DOCKER_IMAGES", "=image"),
        ("EVALMESH_DOCKER_WARM", "-1"),
        ("EVALMESH_DOCKER_WARM_MAX_IDLE", "0"),
    ],
)
def test_malformed_docker_variables_fail_the_start(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=r"DockerSettings|EVALMESH_DOCKER"):
        _config(**{name: value})


async def test_the_docker_backend_is_owned_by_the_instance_id_and_warms_the_default_shape() -> None:
    config = _config(
        EVALMESH_INSTANCE_ID="executor-a-1",
        EVALMESH_EXECUTOR_SLOTS="2",
        EVALMESH_DEFAULT_MEMORY_BYTES=str(128 * MiB),
        EVALMESH_DOCKER_IMAGES="python-ml=,python=rt:2",
        EVALMESH_DOCKER_HOST="unix:///nowhere/docker.sock",
    )
    sandbox = factories()["docker"](config)
    assert isinstance(sandbox, DockerSandbox)
    built = sandbox.config
    assert built.owner == "executor-a-1"
    assert built.base_url == "unix:///nowhere/docker.sock"
    assert dict(built.images) == {"python": "rt:2"}
    assert built.warm == 2
    assert built.warm_limits == SandboxLimits(memory_bytes=128 * MiB)
    assert set(DEFAULT_IMAGES) == {"python", "python-ml"}
    await sandbox.close()
