"""docker-compose.yml, the Dockerfiles and the executor's seccomp profile, checked offline.

The compose file (rendered from the catalog of services, see deploy/tests/test_compose_file.py)
is parsed by the official compose binary (no engine needed) and held to the rules README's
"Deploy on one server" states: health-gated start, restart policies, read-only roots without
capabilities, secrets only in volumes, an internal mesh network, and the executor's exact
privileges. The whole cycle against a real engine is tests/test_compose_stack.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = Path(sys.executable).parent / "docker-compose"
ONE_SHOTS = {"setup", "bootstrap", "cli"}
LONG_RUNNING = {
    "postgres",
    "nats",
    "storage",
    "scheduler",
    "executor-pool",
    "gateway",
    "edge",
    "prometheus",
}
DOCKERFILES = {
    "postgres": "services/postgres/Dockerfile",
    "nats": "services/nats/Dockerfile",
    "storage": "services/storage/Dockerfile",
    "scheduler": "services/scheduler/Dockerfile",
    "executor-pool": "services/executor-pool/Dockerfile",
    "gateway": "gateway/Dockerfile",
    "edge": "envoy/Dockerfile",
    "cli": "clients/python/Dockerfile",
    "prometheus": "services/prometheus/Dockerfile",
}
EXECUTOR_SECURITY = {
    "no-new-privileges:true",
    "seccomp=services/executor-pool/executor-seccomp.json",
    "systempaths=unconfined",
    "apparmor=unconfined",
}


@cache
def _config() -> dict[str, Any]:
    if not COMPOSE.exists():
        pytest.skip("the docker-compose binary is missing (scripts/setup installs it)")
    done = subprocess.run(
        [
            str(COMPOSE),
            "--env-file",
            os.devnull,
            "--profile",
            "tools",
            "config",
            "--format",
            "json",
        ],
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


def test_compose_accepts_the_file_and_it_has_every_deployable() -> None:
    assert set(_services()) == LONG_RUNNING | ONE_SHOTS


def test_every_image_is_ours_and_never_pulled() -> None:
    for name, service in _services().items():
        assert service["image"].startswith("evalmesh/"), name
        assert service["pull_policy"] == "never", name


def test_every_container_has_a_read_only_root_and_drops_every_capability() -> None:
    for name, service in _services().items():
        assert service.get("read_only") is True, name
        assert service.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        assert not service.get("privileged"), name


def test_only_the_executor_and_setup_get_capabilities_and_only_the_documented_ones() -> None:
    added = {name: set(s.get("cap_add", [])) for name, s in _services().items() if s.get("cap_add")}
    assert added == {"executor-pool": {"CHOWN", "SETUID", "SETGID"}, "setup": {"CHOWN"}}


def test_the_executor_gets_exactly_what_bwrap_needs_and_nothing_else() -> None:
    executor = _services()["executor-pool"]
    assert set(executor["security_opt"]) == EXECUTOR_SECURITY
    assert executor["cgroup"] == "host"
    mounts = [(v["type"], v["source"], v["target"]) for v in executor["volumes"]]
    assert mounts == [("bind", "/sys/fs/cgroup", "/sys/fs/cgroup")]
    assert set(executor["networks"]) == {"mesh"}
    assert executor["environment"]["EVALMESH_SANDBOX_BACKEND"] == "bwrap"
    assert "pids_limit" in executor
    assert "mem_limit" in executor


def test_no_container_can_reach_the_engine_socket() -> None:
    for name, service in _services().items():
        for volume in service.get("volumes", []):
            assert "docker.sock" not in str(volume.get("source", "")), name
            assert "containerd" not in str(volume.get("source", "")), name


def test_long_running_services_restart_and_start_only_after_what_they_need_is_healthy() -> None:
    services = _services()
    for name in LONG_RUNNING:
        assert services[name]["restart"] == "unless-stopped", name
        for need, condition in services[name].get("depends_on", {}).items():
            one_shot = need in ("setup", "bootstrap")
            wanted = "service_completed_successfully" if one_shot else "service_healthy"
            assert condition["condition"] == wanted, (name, need)
    order = {
        "storage": {"postgres"},
        "scheduler": {"nats", "storage"},
        "executor-pool": {"nats", "storage"},
        "gateway": {"nats", "scheduler", "storage"},
        "edge": {"gateway", "bootstrap"},
        "bootstrap": {"setup", "storage"},
    }
    for name, needs in order.items():
        assert set(services[name]["depends_on"]) == needs, name


def test_setup_runs_first_without_a_network() -> None:
    setup = _services()["setup"]
    assert setup["network_mode"] == "none"
    assert setup["restart"] == "no"
    assert _services()["postgres"]["depends_on"]["setup"]["condition"] == (
        "service_completed_successfully"
    )


def test_only_the_edge_and_the_gateway_publish_public_ports_and_metrics_stay_on_loopback() -> None:
    public: dict[str, set[int]] = {}
    for name, service in _services().items():
        for port in service.get("ports", []):
            if int(port["target"]) in (9464, 8222, 9090):
                assert port["host_ip"] == "127.0.0.1", name
            else:
                public.setdefault(name, set()).add(int(port["target"]))
    assert public == {"edge": {8443, 8080}, "gateway": {50051}}


def test_the_mesh_network_is_internal_and_only_published_services_leave_it() -> None:
    networks = _config()["networks"]
    assert networks["mesh"]["internal"] is True
    on_public = {n for n, s in _services().items() if "public" in s.get("networks", {})}
    assert on_public == {"edge", "gateway"}


def test_no_secret_is_written_into_the_compose_file_or_an_environment() -> None:
    services = _services()
    for name, service in services.items():
        for variable in service.get("environment") or {}:
            if re.search(r"PASSWORD|SECRET|TOKEN|API_KEY", variable):
                assert variable.endswith("_FILE"), (name, variable)
    # The database password reaches storage through a libpq password file, not its URL.
    storage = services["storage"]["environment"]
    assert urlsplit(storage["EVALMESH_DATABASE_URL"]).password is None
    assert storage["PGPASSFILE"].startswith("/secrets/")


def test_secrets_are_mounted_read_only_and_only_where_they_are_read() -> None:
    readers: dict[str, set[str]] = {}
    for name, service in _services().items():
        for volume in service.get("volumes", []):
            if volume["type"] != "volume":
                continue
            readers.setdefault(volume["source"], set()).add(name)
            if name not in ("setup", "bootstrap") and volume["source"] not in (
                "postgres-data",
                "nats-data",
                "prometheus-data",
            ):
                assert volume.get("read_only") is True, (name, volume)
    assert readers["setup-state"] == {"setup"}
    assert readers["db-password"] == {"setup", "postgres"}
    assert readers["storage-secrets"] == {"setup", "storage"}
    assert readers["tls"] == {"setup", "gateway", "edge"}
    assert readers["admin-key"] == {"setup", "bootstrap", "cli"}


def test_every_setting_compose_reads_is_documented_in_env_example() -> None:
    used = set(re.findall(r"\$\{(EVALMESH_[A-Z_]+)", (ROOT / "docker-compose.yml").read_text()))
    example = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^(EVALMESH_[A-Z_]+)=", example, re.M))
    assert used == documented


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_each_dockerfile_builds_offline_as_a_labelled_unprivileged_image(image: str) -> None:
    text = (ROOT / DOCKERFILES[image]).read_text()
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms, image
    assert all(source.startswith("${BASE_IMAGE}") for source in froms), froms
    base = re.search(r"^ARG BASE_IMAGE=(\S+)", text, re.M)
    assert base is not None
    assert base.group(1).startswith("evalmesh/base")
    if image != "postgres":  # the others install wheels in a stage of their own
        assert len(froms) == 2, image
    for label in ("version", "revision", "created"):
        assert f"org.opencontainers.image.{label}=" in text, (image, label)
    user = re.findall(r"^USER (\S+)", text, re.M)[-1]
    # The executor starts as root only for its entrypoint, which drops to 10001 (tested live).
    assert user == ("0:0" if image == "executor-pool" else "999:999" if image == "postgres" else
                    "10001:10001"), image  # fmt: skip
    health = re.search(r"^HEALTHCHECK (.*)", text, re.M)
    assert health is not None, image
    if image == "cli":
        assert health.group(1) == "NONE"
    assert not re.search(r"(?i)(password|secret|api_key)\s*=", text), image


def test_the_executor_entrypoint_delegates_cgroups_and_drops_to_the_app_user() -> None:
    entrypoint = ROOT / "services" / "executor-pool" / "container" / "entrypoint"
    assert subprocess.run(["sh", "-n", str(entrypoint)], check=False).returncode == 0
    text = entrypoint.read_text()
    assert 'exec setpriv --reuid="$user" --regid="$user" --clear-groups --inh-caps=-all' in text


def test_the_executor_seccomp_profile_allows_bwrap_and_denies_kernel_attack_surface() -> None:
    profile = json.loads((ROOT / "services/executor-pool/executor-seccomp.json").read_text())
    assert profile["defaultAction"] == "SCMP_ACT_ALLOW"
    denied = {name for rule in profile["syscalls"] for name in rule["names"]}
    assert all(rule["action"] == "SCMP_ACT_ERRNO" for rule in profile["syscalls"])
    for needed in ("unshare", "clone", "mount", "umount2", "pivot_root", "seccomp", "prctl"):
        assert needed not in denied, needed
    for dangerous in ("keyctl", "add_key", "bpf", "ptrace", "process_vm_writev", "kexec_load",
                      "init_module", "open_by_handle_at", "io_uring_setup", "userfaultfd",
                      "perf_event_open", "fsopen", "mount_setattr"):  # fmt: skip
        assert dangerous in denied, dangerous


def test_scripts_images_and_the_image_entrypoints_parse() -> None:
    for script in ("scripts/images", "scripts/debian-mirror"):
        assert subprocess.run(["bash", "-n", str(ROOT / script)], check=False).returncode == 0
    postgres = ROOT / "services" / "postgres" / "entrypoint"
    assert subprocess.run(["sh", "-n", str(postgres)], check=False).returncode == 0


def test_the_docker_build_context_holds_only_prepared_inputs() -> None:
    lines = [
        line
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line.removeprefix("!").rstrip("/") for line in lines[1:]}
    for dockerfile in DOCKERFILES.values():
        for source in re.findall(r"^COPY (?!--from)(\S+)", (ROOT / dockerfile).read_text(), re.M):
            assert any(source.rstrip("/").startswith(entry) for entry in allowed), source
