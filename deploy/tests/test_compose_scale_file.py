"""docker-compose.scale.yml is the catalog rendered as well: the committed file is exactly what
``evalmesh_deploy.compose_scale`` writes, and each replica runs its component's image with the
one-host file's settings, reaching its needs through every replica of them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from evalmesh_deploy import compose, compose_scale
from evalmesh_deploy.catalog import NATS, SERVICES, Component, service_env

ROOT = Path(__file__).resolve().parents[2]


def _services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(compose_scale.render())["services"]
    return services


def test_the_committed_scale_file_is_the_one_the_catalog_renders() -> None:
    committed = (ROOT / "docker-compose.scale.yml").read_text()
    assert committed == compose_scale.render(), (
        "docker-compose.scale.yml is stale: run scripts/gen and commit it"
    )


def test_the_replicas_are_numbered_services_of_each_replicated_component() -> None:
    assert compose_scale.replicas("nats") == ["nats-1", "nats-2", "nats-3"]
    assert compose_scale.replicas("gateway") == ["gateway-1", "gateway-2"]
    assert compose_scale.replicas("postgres") == ["postgres"]
    assert "prometheus" not in _services()


@pytest.mark.parametrize("component", SERVICES, ids=lambda c: c.name)
def test_each_replica_is_the_one_host_service_with_every_replica_of_its_needs(
    component: Component,
) -> None:
    one_host = yaml.safe_load(compose.render())["services"][component.name]
    nats = ",".join(f"nats://{name}:4222" for name in compose_scale.replicas(NATS.name))
    for name in compose_scale.replicas(component.name):
        service = _services()[name]
        assert service["image"] == one_host["image"]
        env = service["environment"]
        expected = service_env(component, lambda need: need.endpoint(need.name))
        assert set(expected) <= set(env)
        if "EVALMESH_NATS_URL" in expected:
            assert env["EVALMESH_NATS_URL"] == nats
        assert service["networks"]["mesh"] == {"aliases": [component.name]}
        after = set(service.get("depends_on", {}))
        wanted = {r for need in component.needs for r in compose_scale.replicas(need)}
        assert wanted <= after
