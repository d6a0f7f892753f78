"""The browser UI (clients/web): its static checks and unit tests, and end to end in real Chromium.

Both run the UI's own tooling through npm (installed by scripts/setup with ``npm ci``): the first
``npm run check`` (tsc strict, ESLint + Prettier, Vitest), the second ``clients/web/e2e/run.mjs``,
which builds the UI, starts the real mesh with ``python -m evalmesh_deploy.local up``, drives
Debian's Chromium with playwright-core and saves a screenshot of every step under
test-artifacts/web-e2e/.
A third bundles ``clients/web/e2e/grpc-web-node.mjs`` with esbuild and runs it in Node: a real
gRPC-web client (connect-web and the generated TypeScript) through Envoy to the session mesh.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from evalmesh_deploy.local.mesh import MeshEndpoints
from tests.conftest import ROOT

WEB = ROOT / "clients" / "web"
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))


def _run(argv: list[str], timeout: float, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(
        argv,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
    )
    output = f"{result.stdout[-8000:]}\n{result.stderr[-4000:]}"
    assert result.returncode == 0, f"{' '.join(argv)} failed:\n{output}"


def _npm() -> str:
    npm = shutil.which("npm")
    assert npm is not None, "npm (Node 20+) is required; scripts/setup checks for it"
    return npm


def test_web_ui_typechecks_lints_and_passes_its_unit_tests() -> None:
    _run([_npm(), "run", "check", "-w", "clients/web", "--silent"], timeout=900)


@pytest.mark.slow
def test_web_ui_end_to_end_in_chromium_against_the_real_mesh() -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: scripts/setup installs Debian's chromium as root")
    node = shutil.which("node")
    assert node is not None, "node (20+) is required; scripts/setup checks for it"
    _run(
        [node, str(WEB / "e2e" / "run.mjs")],
        timeout=1200,
        env={"EVALMESH_PYTHON": sys.executable, "CHROMIUM": str(CHROMIUM)},
    )


@pytest.mark.slow
def test_a_grpc_web_client_in_node_reaches_the_gateway_through_envoy(
    mesh: MeshEndpoints, tmp_path: Path
) -> None:
    """Unary calls, a watch open past Envoy's 15 s default, and decoded BadRequest details."""
    node = shutil.which("node")
    assert node is not None, "node (20+) is required; scripts/setup checks for it"
    bundle = tmp_path / "grpc-web-node.mjs"
    _run(
        [
            *(_npm(), "exec", "--no", "-w", "clients/web", "--", "esbuild"),
            str(WEB / "e2e" / "grpc-web-node.mjs"),
            *("--bundle", "--platform=node", "--format=esm", "--log-level=warning"),
            f"--outfile={bundle}",
        ],
        timeout=120,
    )
    _run([node, str(bundle), mesh.url, mesh.admin_api_key], timeout=180)
