"""docker-compose.yml, rendered from the catalog: ``python -m evalmesh_deploy.compose``.

``scripts/gen`` writes the file and a test fails when the committed one differs, so the service
list, images, container ports, start order and the environment through which each service finds
the others are the catalog's (``evalmesh_deploy.catalog``), as they are for the local launcher.
What belongs to one host run by compose is here: published ports, networks, the volumes that carry
secrets, each container's privileges, and the one-shot steps. README, "Deploy on one server",
explains every part.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Iterable
from typing import Any

from evalmesh_deploy.catalog import (
    EDGE,
    EXECUTOR_POOL,
    GATEWAY,
    IMAGE_PREFIX,
    METRICS_PORT,
    NATS,
    POSTGRES,
    PROMETHEUS,
    SCHEDULER,
    STORAGE,
    Component,
    service_env,
)
from evalmesh_deploy.prometheus import CONFIG_DIR
from evalmesh_deploy.yamltext import block_yaml

__all__ = ["ENTRIES", "SERVICE_DEFAULTS", "STEP_DEFAULTS", "Entry", "document", "render"]

TAG = "${EVALMESH_TAG:-latest}"
PUBLIC_BIND = "${EVALMESH_BIND:-0.0.0.0}"
METRICS_BIND = "${EVALMESH_METRICS_BIND:-127.0.0.1}"
# The image of the evalmesh CLI, which also runs the one-shot steps (python -m evalmesh_deploy).
CLI_IMAGE = f"{IMAGE_PREFIX}/cli:{TAG}"
DATABASE = "evalmesh"  # PostgreSQL's user and database
# The host port (a .env setting and its default) of the metrics published on the host. Only the
# gateway's: Docker publishes no port of a container whose networks are all internal, so the
# metrics of storage, the scheduler, the executor pool and NATS are read inside the mesh, by
# Prometheus (which is published).
METRICS_HOST_PORTS = {
    GATEWAY.name: "${EVALMESH_GATEWAY_METRICS_PORT:-9464}",
}

HEADER = """\
# evalmesh on one server. Build the images first (no registry needed): scripts/images
# Then: docker compose up -d        (README, "Deploy on one server", explains every part)
#
# Generated from the catalog of services (deploy/src/evalmesh_deploy/catalog.py) by scripts/gen;
# change the catalog or deploy/src/evalmesh_deploy/compose.py, not this file.
#
# Settings come from .env (see .env.example; every variable has a default). Secrets are never in
# this file or an image: the one-shot `setup` makes them (or copies the operator's from
# ./secrets) into volumes, each mounted read-only into the containers that read it.
# Trust boundary: only the edge (HTTPS, and HTTP that redirects) and the gateway's TLS port are
# published. Everything else talks plaintext on the `mesh` network, which is internal (no route
# out). Evaluations run in bwrap sandboxes inside executor-pool with no network at all.
"""

# Every long-running container: never pulled, restarted, read-only, without capabilities.
SERVICE_DEFAULTS: dict[str, Any] = {
    "pull_policy": "never",
    "restart": "unless-stopped",
    "read_only": True,
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges:true"],
    "tmpfs": ["/tmp"],  # noqa: S108  (the container's own /tmp, a private tmpfs)
    "logging": {"driver": "json-file", "options": {"max-size": "10m", "max-file": "3"}},
}
# The one-shot steps, run from the CLI's image.
STEP_DEFAULTS: dict[str, Any] = {
    "image": CLI_IMAGE,
    "pull_policy": "never",
    "read_only": True,
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges:true"],
    "entrypoint": ["python3", "-m", "evalmesh_deploy"],
}

NETWORKS = {
    # Internal: no default route, so nothing on it reaches the host's networks or the internet.
    "mesh": {"internal": True},
    # The published services (edge, gateway) and the edge's hop to the gateway.
    "public": {},
    # Prometheus' published port: Docker publishes no port of a container whose networks are all
    # internal, so Prometheus, which scrapes the mesh, is on this one as well, and nothing else is.
    "metrics": {},
}
VOLUMES = ("postgres-data", "nats-data", "setup-state", "tls", "db-password", "storage-secrets",
           "admin-key", "prometheus-data")  # fmt: skip


def _healthy(*names: str) -> dict[str, Any]:
    return {name: {"condition": "service_healthy"} for name in names}


def _completed(*names: str) -> dict[str, Any]:
    return {name: {"condition": "service_completed_successfully"} for name in names}


def _published(bind: str, host_port: str, container_port: int) -> str:
    return f"{bind}:{host_port}:{container_port}"


def _address(component: Component) -> str:
    """Each component is reached by its compose service name, on its own port."""
    return component.endpoint(component.name)


def _environment(component: Component, **settings: str) -> dict[str, str]:
    return {
        "EVALMESH_LOG_LEVEL": "${EVALMESH_LOG_LEVEL:-INFO}",
        **service_env(component, _address),
        "EVALMESH_METRICS_PORT": str(METRICS_PORT),
        **settings,
    }


def _service(component: Component, **details: Any) -> dict[str, Any]:
    """A long-running component: its image, what compose adds, and after what it starts."""
    metrics = component.ports.get("metrics")
    ports = list(details.pop("ports", []))
    if metrics is not None and component.name in METRICS_HOST_PORTS:
        ports.append(_published(METRICS_BIND, METRICS_HOST_PORTS[component.name], metrics))
    service = {"image": f"{component.image}:{TAG}", **details}
    if ports:
        service["ports"] = ports
    after = {**_healthy(*component.needs), **service.pop("depends_on", {})}
    if after:
        service["depends_on"] = after
    return service


def _storage() -> dict[str, Any]:
    database = f"postgresql+psycopg://{DATABASE}@{_address(POSTGRES)}/{DATABASE}"
    env = _environment(
        STORAGE,
        EVALMESH_DATABASE_URL=database,
        PGPASSFILE="/secrets/storage/pgpass",
        EVALMESH_PAGE_TOKEN_SECRET_FILE="/secrets/storage/page-token-secret",  # noqa: S106 (a path)
    )
    return _service(
        STORAGE,
        environment=env,
        volumes=["storage-secrets:/secrets/storage:ro"],
        networks=["mesh"],
        depends_on=_healthy(POSTGRES.name),
    )


def _executor_pool() -> dict[str, Any]:
    env = _environment(
        EXECUTOR_POOL,
        EVALMESH_SANDBOX_BACKEND="bwrap",
        EVALMESH_EXECUTOR_SLOTS="${EVALMESH_EXECUTOR_SLOTS:-2}",
    )
    return _service(
        EXECUTOR_POOL,
        environment=env,
        cap_add=["CHOWN", "SETUID", "SETGID"],
        security_opt=[
            "no-new-privileges:true",
            "seccomp=services/executor-pool/executor-seccomp.json",
            "systempaths=unconfined",
            "apparmor=unconfined",
        ],
        cgroup="host",
        volumes=["/sys/fs/cgroup:/sys/fs/cgroup:rw"],
        mem_limit="${EVALMESH_EXECUTOR_MEMORY:-4g}",
        pids_limit=4096,
        stop_grace_period="30s",
        networks=["mesh"],
    )


def _gateway() -> dict[str, Any]:
    env = _environment(
        GATEWAY,
        EVALMESH_LISTEN_ADDRESS=f"0.0.0.0:{GATEWAY.ports['grpc']}",
        EVALMESH_TLS_CERT_FILE="/secrets/tls/server.crt",
        EVALMESH_TLS_KEY_FILE="/secrets/tls/server.key",
        EVALMESH_PLAINTEXT_LISTEN_ADDRESS=f"0.0.0.0:{GATEWAY.ports['plaintext']}",
        EVALMESH_RUNTIMES="python",
    )
    grpc = GATEWAY.ports["grpc"]
    return _service(
        GATEWAY,
        environment=env,
        volumes=["tls:/secrets/tls:ro"],
        networks=["mesh", "public"],
        ports=[_published(PUBLIC_BIND, f"${{EVALMESH_GRPC_PORT:-{grpc}}}", grpc)],
    )


def _edge() -> dict[str, Any]:
    https, http = EDGE.ports["https"], EDGE.ports["http"]
    command = [
        f"--listen=0.0.0.0:{https}",
        f"--gateway={_address(GATEWAY)}",
        "--tls-cert=/secrets/tls/server.crt",
        "--tls-key=/secrets/tls/server.key",
        f"--http-redirect-port={http}",
        "--public-https-port=${EVALMESH_HTTPS_PORT:-443}",
    ]
    return _service(
        EDGE,
        command=command,
        volumes=["tls:/secrets/tls:ro"],
        networks=["public"],
        ports=[
            _published(PUBLIC_BIND, "${EVALMESH_HTTPS_PORT:-443}", https),
            _published(PUBLIC_BIND, "${EVALMESH_HTTP_PORT:-80}", http),
        ],
        # Last: once the edge serves, the first admin key exists (and `up --wait` sees it done).
        depends_on=_completed("bootstrap"),
    )


def _postgres() -> dict[str, Any]:
    return _service(
        POSTGRES,
        environment={
            "POSTGRES_USER": DATABASE,
            "POSTGRES_DB": DATABASE,
            "POSTGRES_PASSWORD_FILE": "/secrets/db/postgres-password",
        },
        tmpfs=["/tmp", "/var/run/postgresql:uid=999,gid=999,mode=2775"],  # noqa: S108
        shm_size="256m",
        volumes=["postgres-data:/var/lib/postgresql/data", "db-password:/secrets/db:ro"],
        networks=["mesh"],
        depends_on=_completed("setup"),
    )


def _nats() -> dict[str, Any]:
    return _service(NATS, volumes=["nats-data:/data"], networks=["mesh"])


def _setup() -> dict[str, Any]:
    return {
        "command": ["setup", "--names", "${EVALMESH_PUBLIC_NAMES:-localhost}"],
        "user": "0:0",
        "cap_add": ["CHOWN"],
        "network_mode": "none",
        "restart": "no",
        "volumes": [
            "setup-state:/secrets/state",
            "tls:/secrets/tls",
            "db-password:/secrets/db",
            "storage-secrets:/secrets/storage",
            "admin-key:/secrets/admin",
            "${EVALMESH_SECRETS_DIR:-./secrets}:/input",
        ],
    }


def _bootstrap() -> dict[str, Any]:
    return {
        "command": ["bootstrap", "--storage", _address(STORAGE)],
        "restart": "on-failure",
        "volumes": ["admin-key:/secrets/admin"],
        "networks": ["mesh"],
        "depends_on": {**_completed("setup"), **_healthy(STORAGE.name)},
    }


def _cli() -> dict[str, Any]:
    return {
        "profiles": ["tools"],
        "entrypoint": [
            "sh",
            "-c",
            'EVALMESH_API_KEY="$$(cat /secrets/admin/admin-api-key)" exec evalmesh "$$@"',
            "evalmesh",
        ],
        "environment": {"EVALMESH_ADDRESS": _address(GATEWAY)},
        "command": ["--help"],
        "volumes": ["admin-key:/secrets/admin:ro"],
        "networks": ["mesh"],
    }


def _prometheus() -> dict[str, Any]:
    http = PROMETHEUS.ports["http"]
    return _service(
        PROMETHEUS,
        volumes=[
            "prometheus-data:/prometheus",
            f"./services/prometheus/rules:{CONFIG_DIR}/rules:ro",
        ],
        networks=["mesh", "metrics"],
        ports=[_published(METRICS_BIND, f"${{EVALMESH_PROMETHEUS_PORT:-{http}}}", http)],
    )


def _scheduler() -> dict[str, Any]:
    return _service(SCHEDULER, environment=_environment(SCHEDULER), networks=["mesh"])


@dataclasses.dataclass(frozen=True)
class Entry:
    """One compose service: the defaults it extends, its body, and why it is there."""

    name: str
    extends: str  # "service" (long-running) or "step" (one-shot)
    body: Callable[[], dict[str, Any]]
    comment: tuple[str, ...] = ()


ENTRIES = (
    Entry("setup", "step", _setup, (
        "One-shot, before everything: TLS certificate (the operator's from ./secrets/tls, else one",
        "from a local CA), database password, storage's secrets. As root without a network, and",
        "only allowed to chown, so each file belongs to the one user that reads it.",
    )),
    Entry("postgres", "service", _postgres),
    Entry("nats", "service", _nats),
    Entry("storage", "service", _storage, (
        "libpq reads the database password from PGPASSFILE, so it is in no environment variable.",
    )),
    Entry("scheduler", "service", _scheduler),
    Entry("executor-pool", "service", _executor_pool, (
        "Runs each evaluation in a bwrap sandbox inside this container. It starts as root only to",
        "delegate its own cgroups to the user evalmesh, then runs with no capabilities; README,",
        '"Sandboxes under compose", gives the reason for each setting below.',
    )),
    Entry("gateway", "service", _gateway, (
        "The public API, TLS on its published port. The edge and the health check use its",
        "plaintext listener (EVALMESH_PLAINTEXT_LISTEN_ADDRESS), on the private networks only.",
    )),
    Entry("edge", "service", _edge, (
        "Envoy: HTTPS and the browser UI in front of the gateway. It starts last: once it serves,",
        "the first admin key exists (and `docker compose up --wait` sees it done).",
    )),
    Entry("bootstrap", "step", _bootstrap, (
        "One-shot, once storage answers: the first admin API key, made once and kept in its",
        "volume. Show it: docker compose run --rm bootstrap show-admin-key",
    )),
    Entry("prometheus", "service", _prometheus, (
        "Scrapes every service's metrics port (prometheus.yml is rendered from the catalog into",
        "the image) and evaluates the rules of services/prometheus/rules, mounted from here: after",
        "changing them, docker compose kill -s HUP prometheus. Published on loopback by default.",
    )),
    Entry("cli", "step", _cli, (
        "The CLI inside the mesh with the first admin key, over the internal network:",
        "  docker compose run --rm cli run -c 'print(1)'",
    )),
)  # fmt: skip

FOOTER = """\
networks:
  # Internal: no default route, so nothing on it reaches the host's networks or the internet.
  mesh:
    internal: true
  # The published services (edge, gateway) and the edge's hop to the gateway.
  public: {}
  # Prometheus' published port: Docker publishes no port of a container whose networks are all
  # internal, so Prometheus, which scrapes the mesh, is on this one as well, and nothing else is.
  metrics: {}

volumes:
"""


def _entry(entry: Entry) -> str:
    comment = "".join(f"  # {line}".rstrip() + "\n" for line in entry.comment)
    return f"{comment}  {entry.name}:\n    <<: *{entry.extends}\n{block_yaml(entry.body(), 4)}"


def document(
    header: str, name: str, entries: Iterable[Entry], footer: str, volumes: Iterable[str]
) -> str:
    """A whole compose file: ``header``, the project ``name``, the defaults each entry extends,
    the entries, then ``footer`` (networks) and the named ``volumes``."""
    parts = [
        header,
        f"name: {name}\n\n",
        f"x-service: &service\n{block_yaml(SERVICE_DEFAULTS, 2)}\n",
        f"x-step: &step\n{block_yaml(STEP_DEFAULTS, 2)}\n",
        "services:\n",
        "\n".join(_entry(entry) for entry in entries),
        "\n",
        footer,
        "".join(f"  {volume}:\n" for volume in volumes),
    ]
    return "".join(parts)


def render() -> str:
    """The whole docker-compose.yml."""
    return document(HEADER, "evalmesh", ENTRIES, FOOTER, VOLUMES)


def main() -> int:
    """Write docker-compose.yml to standard output."""
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
