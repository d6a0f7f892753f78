"""docker-compose.yml is the catalog rendered: the committed file is exactly what
``evalmesh_deploy.compose`` writes, and what it writes runs every component of the catalog
with its image, ports, start order and environment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from evalmesh_deploy.catalog import COMPONENTS, METRICS_PORT, SERVICES, Component, service_env
from evalmesh_deploy.compose import render

ROOT = Path(__file__).resolve().parents[2]


def _services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(render())["services"]
    return services


def test_the_committed_compose_file_is_the_one_the_catalog_renders() -> None:
    committed = (ROOT / "docker-compose.yml").read_text()
    assert committed == render(), "docker-compose.yml is stale: run scripts/gen and commit it"


@pytest.mark.parametrize("component", COMPONENTS.values(), ids=lambda c: c.name)
def test_each_component_runs_its_image_after_what_it_needs_is_healthy(
    component: Component,
) -> None:
    service = _services()[component.name]
    assert service["image"] == component.image + ":${EVALMESH_TAG:-latest}"
    for need in component.needs:
        assert service["depends_on"][need] == {"condition": "service_healthy"}


@pytest.mark.parametrize("component", SERVICES, ids=lambda c: c.name)
def test_each_service_finds_its_needs_by_service_name_and_serves_metrics(
    component: Component,
) -> None:
    service = _services()[component.name]
    expected = service_env(component, lambda need: need.endpoint(need.name))
    assert expected.items() <= service["environment"].items()
    assert service["environment"]["EVALMESH_METRICS_PORT"] == str(METRICS_PORT)
    # A port of a container on internal networks only is never reachable from the host, so only
    # a service on a network with a route out publishes its metrics (the others: Prometheus).
    published = {int(port.rpartition(":")[2]) for port in service.get("ports", [])}
    networks = yaml.safe_load(render())["networks"]
    internal = {name for name, network in networks.items() if (network or {}).get("internal")}
    internal_only = set(service["networks"]) <= internal
    assert (component.ports["metrics"] in published) is not internal_only


def test_the_mesh_reaches_the_gateway_and_storage_on_their_catalog_ports() -> None:
    services = _services()
    assert "--gateway=gateway:50050" in services["edge"]["command"]
    assert services["cli"]["environment"]["EVALMESH_ADDRESS"] == "gateway:50050"
    assert services["bootstrap"]["command"] == ["bootstrap", "--storage", "storage:50053"]
