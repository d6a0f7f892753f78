"""The real grpcurl against the gateway and through the Envoy edge; the README's grpcurl block."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from evalmesh_deploy.local.mesh import MeshEndpoints
from tests.conftest import ROOT

GRPCURL = str(Path(sys.executable).parent / "grpcurl")
UNAUTHENTICATED_EXIT = 64 + 16


def grpcurl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [GRPCURL, "-plaintext", *args], capture_output=True, text=True, timeout=60, check=check
    )


def readme_block() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Talking to it with grpcurl") :]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match, "the README's grpcurl section has no bash block"
    return match.group(1)


def test_the_readme_grpcurl_walkthrough_runs_as_written(
    mesh: MeshEndpoints, tmp_path: Path
) -> None:
    (tmp_path / ".evalmesh").mkdir()
    (tmp_path / ".evalmesh" / "mesh.json").write_text(json.dumps(mesh.as_dict({})))
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    script = "set -euo pipefail\n" + readme_block()
    result = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    hello = base64.b64encode(b"hello from evalmesh\n").decode()
    assert hello in result.stdout
    assert "STATE_SUCCEEDED" in result.stdout
    assert "evalmesh.v1.EvaluationService" in result.stdout


def test_calls_without_a_key_exit_unauthenticated_but_reflection_and_health_answer(
    mesh: MeshEndpoints,
) -> None:
    gateway = mesh.services["gateway"]
    assert "evalmesh.v1.ClusterService" in grpcurl(gateway, "list").stdout
    health = grpcurl("-d", '{"service": ""}', gateway, "grpc.health.v1.Health/Check")
    assert "SERVING" in health.stdout
    refused = grpcurl(
        "-d", '{"id": "ev_x"}', gateway, "evalmesh.v1.EvaluationService/GetEvaluation", check=False
    )
    assert refused.returncode == UNAUTHENTICATED_EXIT


@pytest.mark.parametrize("via", ["gateway", "edge"])
def test_create_get_watch_and_cancel_work_directly_and_through_envoy(
    mesh: MeshEndpoints, via: str
) -> None:
    address = mesh.services["gateway"] if via == "gateway" else f"127.0.0.1:{mesh.edge_port}"
    # The edge forwards only the public API, not reflection: describe it from the contracts.
    schema = ["-import-path", str(ROOT / "proto"), "-proto", "evalmesh/v1/evaluation_service.proto"]
    auth = ["-H", f"authorization: Bearer {mesh.admin_api_key}"]

    def call(method: str, payload: dict[str, object]) -> str:
        data = json.dumps(payload)
        rpc = f"evalmesh.v1.EvaluationService/{method}"
        return grpcurl(*schema, *auth, "-d", data, address, rpc).stdout

    code = "import time\nprint('tick', flush=True)\ntime.sleep(60)"
    created = json.loads(
        call("CreateEvaluation", {"request_id": f"grpcurl-{via}", "spec": {"code": code}})
    )
    evaluation_id = created["evaluation"]["id"]
    assert (
        json.loads(call("GetEvaluation", {"id": evaluation_id}))["evaluation"]["id"]
        == evaluation_id
    )
    assert (
        json.loads(call("CancelEvaluation", {"id": evaluation_id}))["evaluation"]["id"]
        == evaluation_id
    )
    assert "STATE_CANCELLED" in call("WatchEvaluation", {"id": evaluation_id})
