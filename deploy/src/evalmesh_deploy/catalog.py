"""The mesh's components, written down once: what runs, from which image or module, on which
ports, how its health is asked, what it needs first, and the environment that tells it where
those needs listen.

Every way of running evalmesh derives from this catalog: the local launcher
(``evalmesh_deploy.local``) starts the services in this order with this environment,
docker-compose.yml is rendered from it (``evalmesh_deploy.compose``, checked by a test), and
so is the Kubernetes base (``evalmesh_deploy.kubernetes``, likewise). Targets differ only in
where a component can be reached (loopback and a free port, a compose service name, a
Kubernetes Service) and in the database, so each target says where, and :func:`service_env`
derives the rest. Nothing here imports grpc: it is data, read by code that renders files as
well as by code that starts processes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

__all__ = [
    "COMPONENTS",
    "DATABASE_URL_VARIABLE",
    "EDGE",
    "EXECUTOR_POOL",
    "GATEWAY",
    "IMAGE_PREFIX",
    "METRICS_PORT",
    "NATS",
    "POSTGRES",
    "PROMETHEUS",
    "SCHEDULER",
    "SERVICES",
    "STORAGE",
    "Component",
    "service_env",
]

IMAGE_PREFIX = "evalmesh"
# Every service of ours serves Prometheus metrics on this port inside its container.
METRICS_PORT = 9464
# The variable that tells storage where its database is: the one setting each target chooses
# (SQLite in the local state directory, PostgreSQL under compose, a DSN secret on Kubernetes).
DATABASE_URL_VARIABLE = "EVALMESH_DATABASE_URL"


@dataclasses.dataclass(frozen=True)
class Component:
    """Component is one deployable of the mesh: a compose service, an image, a Deployment."""

    # The compose service, the image (evalmesh/<name>), the local process and its log file.
    name: str
    # Named ports it listens on inside its container ("grpc", "metrics", ...).
    ports: Mapping[str, int]
    # What must be up before it starts (and stop after it): components it dials.
    needs: tuple[str, ...] = ()
    # ``python -m MODULE`` for our own services; empty for NATS, PostgreSQL and the edge.
    module: str = ""
    # The grpc.health.v1 service that reports it ready; empty where the image checks itself.
    health_service: str = ""
    # The variable through which the components that need it learn where it listens.
    address_variable: str = ""
    # The port those components dial, by name, and the scheme their address starts with.
    dialled_port: str = "grpc"
    scheme: str = ""
    # True for storage: it is told where the database is (DATABASE_URL_VARIABLE).
    database: bool = False
    # Settings that are the same wherever it runs.
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def image(self) -> str:
        """The image's name, without a tag."""
        return f"{IMAGE_PREFIX}/{self.name}"

    def endpoint(self, host: str, port: int | None = None) -> str:
        """What a client dials to reach it at ``host`` (on its dialled port unless ``port``)."""
        return f"{self.scheme}{host}:{port or self.ports[self.dialled_port]}"


NATS = Component(
    "nats",
    ports={"client": 4222, "monitor": 8222},
    address_variable="EVALMESH_NATS_URL",
    dialled_port="client",
    scheme="nats://",
)
POSTGRES = Component("postgres", ports={"postgres": 5432}, dialled_port="postgres")
STORAGE = Component(
    "storage",
    ports={"grpc": 50053, "metrics": METRICS_PORT},
    module="evalmesh_storage",
    health_service="evalmesh.storage.v1.StorageService",
    address_variable="EVALMESH_STORAGE_ADDRESS",
    database=True,
)
SCHEDULER = Component(
    "scheduler",
    ports={"grpc": 50052, "metrics": METRICS_PORT},
    needs=("nats", "storage"),
    module="evalmesh_scheduler",
    health_service="evalmesh.scheduler.v1.SchedulerService",
    address_variable="EVALMESH_SCHEDULER_ADDRESS",
)
EXECUTOR_POOL = Component(
    "executor-pool",
    ports={"grpc": 50054, "metrics": METRICS_PORT},
    needs=("nats", "storage"),
    module="evalmesh_executor",
    health_service="evalmesh.executor.v1.ExecutorService",
    # The same identity across restarts: a restarted executor finds the leases its predecessor
    # held under this id and ends them at once, instead of leaving them to run out.
    env={"EVALMESH_INSTANCE_ID": "executor-pool-1"},
)
GATEWAY = Component(
    "gateway",
    # grpc is the public port (TLS where certificates are given); the mesh's own clients (the
    # edge, the CLI inside the mesh, health checks) dial the plaintext one on private networks.
    ports={"grpc": 50051, "plaintext": 50050, "metrics": METRICS_PORT},
    needs=("nats", "storage", "scheduler"),
    module="evalmesh_gateway",
    health_service="evalmesh.v1.EvaluationService",
    dialled_port="plaintext",
)
EDGE = Component("edge", ports={"https": 8443, "http": 8080}, needs=("gateway",))
# Scrapes the metrics port of every component that has one (evalmesh_deploy.prometheus). It
# needs nothing first: a target that is down is what it is there to report.
PROMETHEUS = Component("prometheus", ports={"http": 9090}, dialled_port="http")

# The platform's own gRPC services in start order: each starts after what it needs and stops
# before it.
SERVICES = (STORAGE, SCHEDULER, EXECUTOR_POOL, GATEWAY)
COMPONENTS: Mapping[str, Component] = {
    c.name: c for c in (NATS, POSTGRES, *SERVICES, EDGE, PROMETHEUS)
}


def service_env(component: Component, endpoint: Callable[[Component], str]) -> dict[str, str]:
    """The environment ``component`` needs wherever it runs: its fixed settings and, for each
    component it needs, that one's address variable set to ``endpoint(that one)``."""
    env = dict(component.env)
    for name in component.needs:
        need = COMPONENTS[name]
        if need.address_variable:
            env[need.address_variable] = endpoint(need)
    return env
