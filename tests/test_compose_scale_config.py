"""docker-compose.scale.yml, checked offline by the official compose binary (no engine needed).

The scale profile runs the replicated topology on one host (README, "Many hosts"): three NATS
servers in one JetStream cluster, two of each of our services, the edge over both gateways. What
compose makes of the file is held to the catalog (images, ports, the variables through which
each service finds the others) and to the topology. Running it, and killing one of each, is
tests/test_compose_scale_stack.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import pytest

from evalmesh_deploy.catalog import (
    COMPONENTS,
    EDGE,
    GATEWAY,
    NATS,
    SERVICES,
    service_env,
)
from evalmesh_deploy.kubernetes.network import NATS_CLUSTER_PORT
from tests.test_compose_config import COMPOSE, EXECUTOR_SECURITY, ROOT

SCALE_FILE = "docker-compose.scale.yml"
REPLICAS = {"nats": 3, "storage": 2, "scheduler": 2, "executor-pool": 2, "gateway": 2}
SINGLE = {"postgres", "edge", "setup", "bootstrap", "cli"}


@cache
def _config() -> dict[str, Any]:
    if not COMPOSE.exists():
        pytest.skip("the docker-compose binary is missing (scripts/setup installs it)")
    argv = [str(COMPOSE), "-f", SCALE_FILE, "--env-file", os.devnull, "--profile", "tools"]
    done = subprocess.run(
        [*argv, "config", "--format", "json"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = json.loads(done.stdout)
    return config


def _services() -> dict[str, Any]:
    services: dict[str, Any] = _config()["services"]
    return services


def _replicas(component: str) -> list[str]:
    count = REPLICAS.get(component)
    return [f"{component}-{n}" for n in range(1, count + 1)] if count else [component]


def _component(service: str) -> str:
    return service if service in COMPONENTS else service.rpartition("-")[0]


def test_compose_accepts_the_scale_file_with_three_nats_and_two_of_each_service() -> None:
    replicated = {name for component in REPLICAS for name in _replicas(component)}
    assert set(_services()) == replicated | SINGLE
    assert _config()["name"] == "evalmesh-scale"


def test_every_replica_runs_its_components_image_never_pulled_read_only_without_caps() -> None:
    for name, service in _services().items():
        component = COMPONENTS.get(_component(name))
        image = f"{component.image}:latest" if component else "evalmesh/cli:latest"
        assert service["image"] == image, name
        assert service["pull_policy"] == "never", name
        assert service.get("read_only") is True, name
        assert service.get("cap_drop") == ["ALL"], name


def test_the_nats_servers_form_one_cluster_with_routes_to_all_three() -> None:
    routes = {f"nats://{name}:{NATS_CLUSTER_PORT}" for name in _replicas("nats")}
    names = set()
    for name in _replicas("nats"):
        command = _services()[name]["command"]
        flags = dict(zip(command[::2], command[1::2], strict=True))
        assert flags["--cluster_name"] == "evalmesh"
        assert flags["--cluster"] == f"nats://0.0.0.0:{NATS_CLUSTER_PORT}"
        assert set(flags["--routes"].split(",")) == routes
        names.add(flags["--name"])
        # Healthy only once JetStream is current with the cluster, not merely enabled.
        test = " ".join(_services()[name]["healthcheck"]["test"])
        assert f"127.0.0.1:{NATS.ports['monitor']}/healthz'" in test
        volumes = [v["source"] for v in _services()[name]["volumes"]]
        assert volumes == [f"{name}-data"]
    assert names == set(_replicas("nats"))


def test_every_service_dials_all_three_nats_servers_and_its_needs_by_their_alias() -> None:
    servers = {f"{name}:{NATS.ports['client']}" for name in _replicas("nats")}
    for component in SERVICES:
        wanted = service_env(component, lambda need: need.endpoint(need.name))
        for name in _replicas(component.name):
            env = _services()[name]["environment"]
            assert set(wanted) <= set(env), name
            for variable, value in wanted.items():
                if variable == "EVALMESH_INSTANCE_ID":
                    continue  # each replica's own (below)
                if variable == NATS.address_variable:
                    urls = [urlsplit(url) for url in env[variable].split(",")]
                    assert {u.netloc for u in urls} == servers, name
                    assert {u.scheme for u in urls} == {"nats"}, name
                else:
                    assert env[variable] == value, (name, variable)  # one name, every replica
            aliases = _services()[name]["networks"]["mesh"]["aliases"]
            assert aliases == [component.name], name


def test_streams_are_replicated_on_three_servers_and_each_replica_has_its_own_identity() -> None:
    for name in _replicas("scheduler"):
        assert _services()[name]["environment"]["EVALMESH_JETSTREAM_REPLICAS"] == "3"
    for component in ("scheduler", "executor-pool"):
        ids = [_services()[n]["environment"]["EVALMESH_INSTANCE_ID"] for n in _replicas(component)]
        assert ids == _replicas(component)


def test_each_replica_starts_only_once_every_replica_it_needs_is_healthy() -> None:
    for name, service in _services().items():
        component = COMPONENTS.get(_component(name))
        needs = [r for need in (component.needs if component else ()) for r in _replicas(need)]
        after = service.get("depends_on", {})
        for need in needs:
            assert after[need]["condition"] == "service_healthy", (name, need)
    edge = _services()["edge"]["depends_on"]
    assert {n for n, c in edge.items() if c["condition"] == "service_healthy"} == {
        "gateway-1",
        "gateway-2",
    }
    assert edge["bootstrap"]["condition"] == "service_completed_successfully"
    bootstrap = _services()["bootstrap"]["depends_on"]
    assert {"storage-1", "storage-2"} <= set(bootstrap)


def test_the_edge_balances_over_both_gateways_and_is_the_only_published_service() -> None:
    plaintext = GATEWAY.ports["plaintext"]
    command = _services()["edge"]["command"]
    gateways = [arg.removeprefix("--gateway=") for arg in command if arg.startswith("--gateway=")]
    assert gateways == [f"{name}:{plaintext}" for name in _replicas("gateway")]
    published = {
        name: {int(port["target"]) for port in service.get("ports", [])}
        for name, service in _services().items()
        if service.get("ports")
    }
    assert published == {"edge": {EDGE.ports["https"], EDGE.ports["http"]}}
    for name in _replicas("gateway"):
        env = _services()[name]["environment"]
        assert env["EVALMESH_LISTEN_ADDRESS"] == f"0.0.0.0:{plaintext}"
        assert not any(variable.startswith("EVALMESH_TLS_") for variable in env), name
    assert _config()["networks"]["mesh"]["internal"] is True


def test_each_executor_gets_exactly_the_one_host_executors_privileges() -> None:
    for name in _replicas("executor-pool"):
        executor = _services()[name]
        assert set(executor["security_opt"]) == EXECUTOR_SECURITY
        assert set(executor["cap_add"]) == {"CHOWN", "SETUID", "SETGID"}
        assert executor["cgroup"] == "host"
        assert executor["environment"]["EVALMESH_SANDBOX_BACKEND"] == "bwrap"


def test_every_setting_the_scale_file_reads_is_documented_in_env_example() -> None:
    used = set(re.findall(r"\$\{(EVALMESH_[A-Z_]+)", (ROOT / SCALE_FILE).read_text()))
    example = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^(EVALMESH_[A-Z_]+)=", example, re.M))
    assert used <= documented
