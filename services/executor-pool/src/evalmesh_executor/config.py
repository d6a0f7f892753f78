"""The executor pool's settings, from environment variables only (see the service README)."""

from __future__ import annotations

import re
import socket
import uuid
from dataclasses import dataclass

from evalmesh_common import Seconds, env_field, env_group
from evalmesh_common.server import ServerConfig

__all__ = [
    "BACKENDS",
    "DockerSettings",
    "ExecutorConfig",
    "LimitDefaults",
    "OutputConfig",
    "PullConfig",
    "TenantShareConfig",
    "default_instance_id",
]

MIB = 1024 * 1024
BACKENDS = ("auto", "docker", "bwrap")
# What the STOP_WORK hook needs after the drain grace to kill and give back what is left.
_GIVE_BACK_TIME = 3.0
# KV keys allow these characters only; the instance id is the executor's key in the bucket.
_KEY_UNSAFE = re.compile(r"[^-_=.a-zA-Z0-9]")


def default_instance_id() -> str:
    """A name no other executor shares: ``executor-<host>-<random>``, safe as a KV key."""
    host = _KEY_UNSAFE.sub("-", socket.gethostname())[:48] or "host"
    return f"executor-{host}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class LimitDefaults:
    """Limits for a spec field left unset (the scheduler normally resolves them first), and the
    sandbox settings that are the operator's, not the user's."""

    wall_timeout: Seconds = env_field("EVALMESH_DEFAULT_WALL_TIMEOUT", default=Seconds(30))
    memory_bytes: int = env_field("EVALMESH_DEFAULT_MEMORY_BYTES", default=256 * MIB)
    max_processes: int = env_field("EVALMESH_DEFAULT_MAX_PROCESSES", default=64)
    max_output_bytes: int = env_field("EVALMESH_DEFAULT_MAX_OUTPUT_BYTES", default=1 * MIB)
    cpu_millicores: int = env_field("EVALMESH_DEFAULT_CPU_MILLICORES", default=1000)
    # Size of each scratch tmpfs (/tmp, which is $HOME, and /dev/shm); also the largest file.
    scratch_bytes: int = env_field("EVALMESH_SANDBOX_SCRATCH_BYTES", default=64 * MIB)
    # Files and directories each scratch tmpfs may hold (past it: ENOSPC, as on a full disk).
    scratch_inodes: int = env_field("EVALMESH_SANDBOX_SCRATCH_INODES", default=16 * 1024)
    max_open_files: int = env_field("EVALMESH_SANDBOX_MAX_OPEN_FILES", default=256)

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")


@dataclass(frozen=True)
class PullConfig:
    """How the pool takes jobs from the priority consumers."""

    # Deadline of one pull (a no_wait request: it answers at once, job or "no messages").
    fetch_timeout: Seconds = env_field("EVALMESH_FETCH_TIMEOUT", default=Seconds(1))
    # With every class empty, the pool pulls again after this long even without a new-job
    # hint: that is how redeliveries (after ack_wait or a nak delay) are found.
    recheck_interval: Seconds = env_field("EVALMESH_FETCH_RECHECK", default=Seconds(0.5))
    # Give-back delays after a platform fault: the n-th delivery waits ~base * 2**(n-1), capped.
    backoff_base: Seconds = env_field("EVALMESH_RETRY_BACKOFF_BASE", default=Seconds(1))
    backoff_cap: Seconds = env_field("EVALMESH_RETRY_BACKOFF_CAP", default=Seconds(60))
    # A job whose runtime this instance lacks is passed on with this delay.
    pass_on_delay: Seconds = env_field("EVALMESH_PASS_ON_DELAY", default=Seconds(2))

    def __post_init__(self) -> None:
        if self.fetch_timeout < 0.005 or self.recheck_interval <= 0:
            raise ValueError("fetch_timeout must be at least 5ms and recheck_interval positive")
        if not 0 < self.backoff_base <= self.backoff_cap:
            raise ValueError("need 0 < backoff_base <= backoff_cap")


@dataclass(frozen=True)
class OutputConfig:
    """Batching of output persistence."""

    flush_interval: Seconds = env_field("EVALMESH_OUTPUT_FLUSH_INTERVAL", default=Seconds(0.1))
    flush_bytes: int = env_field("EVALMESH_OUTPUT_FLUSH_BYTES", default=256 * 1024)
    # Unpersisted output held per run before the sandbox's reader is made to wait.
    buffer_bytes: int = env_field("EVALMESH_OUTPUT_BUFFER_BYTES", default=2 * MIB)
    # Output still unstored at the end of a run, up to this many bytes, is stored with the
    # result in one write instead of a separate append first.
    with_result_bytes: int = env_field("EVALMESH_OUTPUT_WITH_RESULT_BYTES", default=256 * 1024)

    def __post_init__(self) -> None:
        if self.flush_interval <= 0 or self.flush_bytes <= 0:
            raise ValueError("flush_interval and flush_bytes must be positive")
        if self.buffer_bytes < self.flush_bytes:
            raise ValueError("buffer_bytes must be at least flush_bytes")


@dataclass(frozen=True)
class TenantShareConfig:
    """How much of the pool one tenant may run at once (checked by storage at claim time)."""

    # A hard cap on one tenant's running evaluations across the pool; 0: no cap.
    max_running: int = env_field("EVALMESH_TENANT_MAX_RUNNING", default=0)
    # A tenant's fair share, as a fraction of the pool's slots (counted from the heartbeats).
    # Past it, a tenant's claims are refused while another tenant below its share waits; a lone
    # tenant still fills an idle pool. 1 turns the share off.
    fair_share: float = env_field("EVALMESH_TENANT_FAIR_SHARE", default=0.5)
    # After a refusal, this executor sends that tenant's jobs to the back of the queue without
    # asking storage for this long (or until one of its own runs of the tenant ends).
    remember: Seconds = env_field("EVALMESH_TENANT_REFUSAL_MEMORY", default=Seconds(1))

    def __post_init__(self) -> None:
        if self.max_running < 0:
            raise ValueError("max_running must not be negative")
        if not 0 < self.fair_share <= 1:
            raise ValueError("fair_share must be in (0, 1]")
        if self.remember < 0:
            raise ValueError("remember must not be negative")


@dataclass(frozen=True)
class DockerSettings:
    """The docker backend: which engine, which runtime images, how many warm containers."""

    # The engine (unix:///var/run/docker.sock, tcp://host:2375). Unset: DOCKER_HOST (with
    # DOCKER_TLS_VERIFY and DOCKER_CERT_PATH), else the local socket, as the docker CLI does.
    host: str | None = env_field("EVALMESH_DOCKER_HOST", default=None)
    # Runtime images as comma-separated runtime=image pairs; each replaces that runtime's
    # default image (evalmesh-runtime-<runtime>:latest) or adds a runtime; runtime= with no
    # image leaves that runtime out.
    images: str = env_field("EVALMESH_DOCKER_IMAGES", default="")
    # Started containers kept waiting per runtime for requests with the default limits (each
    # serves one evaluation). Unset: one per slot; 0: none, every run starts its own.
    warm: int | None = env_field("EVALMESH_DOCKER_WARM", default=None)
    # A warm container that waited this long is replaced.
    warm_max_idle: Seconds = env_field("EVALMESH_DOCKER_WARM_MAX_IDLE", default=Seconds(300))

    def __post_init__(self) -> None:
        if self.warm is not None and self.warm < 0:
            raise ValueError("EVALMESH_DOCKER_WARM must not be negative")
        if self.warm_max_idle <= 0:
            raise ValueError("warm_max_idle must be positive")
        self.image_overrides()  # fails on a malformed list

    def image_overrides(self) -> dict[str, str]:
        """The runtime -> image pairs of EVALMESH_DOCKER_IMAGES ("" for a runtime left out)."""
        pairs = {}
        for item in filter(None, (part.strip() for part in self.images.split(","))):
            runtime, equals, image = (half.strip() for half in item.partition("="))
            if not runtime or not equals:
                raise ValueError(f"EVALMESH_DOCKER_IMAGES: {item!r} is not runtime=image")
            pairs[runtime] = image
        return pairs

    def warm_per_runtime(self, slots: int) -> int:
        """Warm containers per runtime: the setting, or one per slot."""
        return slots if self.warm is None else self.warm


@dataclass(frozen=True)
class ExecutorConfig:
    """Where the executor listens, where its dependencies are, and how it sandboxes."""

    server: ServerConfig = env_group(ServerConfig)
    limits: LimitDefaults = env_group(LimitDefaults)
    pull: PullConfig = env_group(PullConfig)
    output: OutputConfig = env_group(OutputConfig)
    share: TenantShareConfig = env_group(TenantShareConfig)
    nats_url: str = env_field("EVALMESH_NATS_URL")
    storage_address: str = env_field("EVALMESH_STORAGE_ADDRESS")
    # "auto" picks docker when its backend is available and an engine answers, else bwrap.
    backend: str = env_field("EVALMESH_SANDBOX_BACKEND", default="auto")
    slots: int = env_field("EVALMESH_EXECUTOR_SLOTS", default=2)
    # bwrap sandboxes kept started ahead, per runtime, waiting for a job (each serves one).
    # Unset: two per slot; 0: every run starts its own (the same way, on the critical path).
    bwrap_prepared: int | None = env_field("EVALMESH_BWRAP_PREPARED", default=None)
    # Package trees (built by scripts/setup: evalmesh_executor.treebuild) as comma-separated
    # runtime=directory pairs; each adds that runtime to the bwrap backend. Unset: none, and
    # bwrap offers the standard-library runtime only.
    bwrap_trees: str = env_field("EVALMESH_BWRAP_RUNTIME_TREES", default="")
    instance_id: str = env_field("EVALMESH_INSTANCE_ID", default="")
    # The claim's lease; heartbeats renew it (and call in_progress) every third of it.
    lease: Seconds = env_field("EVALMESH_EXECUTOR_LEASE", default=Seconds(30))
    storage_timeout: Seconds = env_field("EVALMESH_STORAGE_TIMEOUT", default=Seconds(5))
    # How long storage may stay unreachable before a run is given back unrecorded.
    storage_retry_budget: Seconds = env_field("EVALMESH_STORAGE_RETRY_BUDGET", default=Seconds(20))
    status_interval: Seconds = env_field("EVALMESH_STATUS_INTERVAL", default=Seconds(3))
    self_check_interval: Seconds = env_field("EVALMESH_SELF_CHECK_INTERVAL", default=Seconds(300))
    # On SIGTERM (and by default for the Drain RPC) running jobs get this long to finish; the
    # rest are given back. It must end before the shutdown hook's own timeout.
    drain_grace: Seconds = env_field("EVALMESH_DRAIN_GRACE", default=Seconds(6))
    # Fault injection for tests only: SIGKILL itself after a result is stored, before the ack
    # (HOSTILE.md F05). Never set in production.
    test_crash_before_ack: bool = env_field("EVALMESH_TEST_CRASH_BEFORE_ACK", default=False)
    docker: DockerSettings = env_group(DockerSettings)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend {self.backend!r} is not one of {', '.join(BACKENDS)}")
        if self.slots < 1:
            raise ValueError("slots must be at least 1")
        if self.bwrap_prepared is not None and self.bwrap_prepared < 0:
            raise ValueError("EVALMESH_BWRAP_PREPARED must not be negative")
        self.bwrap_tree_paths()  # fails on a malformed list
        if self.instance_id and _KEY_UNSAFE.search(self.instance_id):
            raise ValueError("instance_id may hold letters, digits and - _ = . only")
        for name in ("lease", "storage_timeout", "status_interval", "self_check_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.drain_grace < 0 or self.drain_grace + _GIVE_BACK_TIME > self.server.hook_timeout:
            raise ValueError(
                f"drain_grace must be at least 0 and end {_GIVE_BACK_TIME:g} s before "
                "EVALMESH_SHUTDOWN_HOOK_TIMEOUT, so the runs left can still be given back"
            )

    def bwrap_tree_paths(self) -> dict[str, str]:
        """The runtime -> tree directory pairs of EVALMESH_BWRAP_RUNTIME_TREES."""
        pairs = {}
        for item in filter(None, (part.strip() for part in self.bwrap_trees.split(","))):
            runtime, equals, path = (half.strip() for half in item.partition("="))
            if not runtime or not equals or not path.startswith("/"):
                raise ValueError(
                    f"EVALMESH_BWRAP_RUNTIME_TREES: {item!r} is not runtime=/absolute/directory"
                )
            pairs[runtime] = path
        return pairs
