"""The catalog is consistent, and the images build what it says: the ports, health service and
module of each component are the ones its Dockerfile serves, exposes, checks and runs."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from evalmesh_deploy.catalog import (
    COMPONENTS,
    EXECUTOR_POOL,
    GATEWAY,
    NATS,
    SERVICES,
    STORAGE,
    Component,
    service_env,
)

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = {
    "nats": "services/nats/Dockerfile",
    "postgres": "services/postgres/Dockerfile",
    "storage": "services/storage/Dockerfile",
    "scheduler": "services/scheduler/Dockerfile",
    "executor-pool": "services/executor-pool/Dockerfile",
    "gateway": "gateway/Dockerfile",
    "edge": "envoy/Dockerfile",
    "prometheus": "services/prometheus/Dockerfile",
}


def _dockerfile(component: Component) -> str:
    return (ROOT / DOCKERFILES[component.name]).read_text()


def _exposed(dockerfile: str) -> set[int]:
    line = re.search(r"^EXPOSE (.*)$", dockerfile, re.M)
    assert line is not None
    return {int(port) for port in line.group(1).split()}


def test_every_component_has_an_image_built_from_a_dockerfile_of_ours() -> None:
    assert set(COMPONENTS) == set(DOCKERFILES)
    for component in COMPONENTS.values():
        assert component.image == f"evalmesh/{component.name}"


def test_every_service_starts_after_everything_it_needs() -> None:
    started = {NATS.name}
    for service in SERVICES:
        assert set(service.needs) <= started, service.name
        started.add(service.name)
    for component in COMPONENTS.values():
        assert set(component.needs) <= set(COMPONENTS), component.name


def test_a_service_is_told_where_each_of_its_needs_listens_and_nothing_else() -> None:
    env = service_env(GATEWAY, lambda need: f"{need.name}.example:1")
    assert env == {
        "EVALMESH_NATS_URL": "nats.example:1",
        "EVALMESH_STORAGE_ADDRESS": "storage.example:1",
        "EVALMESH_SCHEDULER_ADDRESS": "scheduler.example:1",
    }
    assert service_env(STORAGE, lambda need: "unused") == {}
    executor = service_env(EXECUTOR_POOL, lambda need: need.endpoint(need.name))
    assert executor == {
        "EVALMESH_INSTANCE_ID": "executor-pool-1",
        "EVALMESH_NATS_URL": "nats://nats:4222",
        "EVALMESH_STORAGE_ADDRESS": "storage:50053",
    }


@pytest.mark.parametrize("service", SERVICES, ids=lambda service: service.name)
def test_each_service_image_listens_checks_health_and_runs_as_the_catalog_says(
    service: Component,
) -> None:
    text = _dockerfile(service)
    listen = re.search(r"EVALMESH_LISTEN_ADDRESS=0\.0\.0\.0:(\d+)", text)
    assert listen is not None
    assert int(listen.group(1)) == service.ports["grpc"]
    assert _exposed(text) == {service.ports["grpc"], service.ports["metrics"]}
    assert f'"evalmesh-healthcheck", "{service.health_service}"' in text
    assert re.search(rf'^ENTRYPOINT \[.*"-m", "{service.module}"\]$', text, re.M)


@pytest.mark.parametrize("name", ["nats", "postgres", "edge", "prometheus"])
def test_the_images_we_do_not_write_in_python_expose_the_catalogs_ports(name: str) -> None:
    component = COMPONENTS[name]
    assert _exposed(_dockerfile(component)) == set(component.ports.values())


@pytest.mark.parametrize("service", SERVICES, ids=lambda service: service.name)
def test_each_health_service_is_a_service_of_the_contracts(service: Component) -> None:
    package, _, name = service.health_service.rpartition(".")
    module = importlib.import_module(f"{package}.{_snake(name)}_pb2")
    assert name in module.DESCRIPTOR.services_by_name


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def test_reading_the_catalog_loads_neither_grpc_nor_yaml() -> None:
    code = (
        "import sys, evalmesh_deploy.catalog; "
        "print(sorted(m for m in ('grpc', 'yaml', 'cryptography') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
