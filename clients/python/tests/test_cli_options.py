"""The CLI's flags, config file, error messages and exit codes, against a real gRPC server."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner, Result
from client_fake_gateway import FakeGateway, rich_status

from evalmesh.cli import cli
from evalmesh.cli.exits import exit_code_for
from evalmesh.client import Evaluation
from evalmesh.v1 import evaluation_pb2

MIB = 1024 * 1024


@pytest.fixture
def isolated_env(tmp_path: Path) -> dict[str, str]:
    """No address, key, config file or local mesh from the machine running the tests."""
    empty = tmp_path / "nothing"
    empty.mkdir()
    return {
        "EVALMESH_ADDRESS": "",
        "EVALMESH_API_KEY": "",
        "EVALMESH_HOME": str(empty),
        "EVALMESH_CONFIG": str(empty / "config.toml"),
    }


def invoke(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_limit_flags_reach_the_request_in_the_contracts_units(
    fake_gateway: FakeGateway, isolated_env: dict[str, str]
) -> None:
    result = invoke(
        isolated_env,
        *("--address", fake_gateway.address, "--api-key", "k", "submit", "-c", "print(1)"),
        *("--timeout", "1m30s", "--memory", "256M", "--max-processes", "8"),
        *("--max-output", "2M", "--priority", "high", "--runtime", "python-ml"),
        *("--label", "team=ml", "--label", "run=7", "--request-id", "abc-1"),
    )
    assert result.exit_code == 0, result.output
    request = fake_gateway.requests("CreateEvaluation")[0]
    limits = request.spec.limits
    assert limits.wall_timeout.seconds == 90
    assert (limits.memory_bytes, limits.max_processes, limits.max_output_bytes) == (
        256 * MIB,
        8,
        2 * MIB,
    )
    assert request.spec.priority == evaluation_pb2.PRIORITY_HIGH
    assert request.spec.runtime == "python-ml"
    assert dict(request.spec.labels) == {"team": "ml", "run": "7"}
    assert request.request_id == "abc-1"
    assert result.stdout.strip() == fake_gateway.evaluation(request).id


def test_unset_limits_are_left_for_the_server_defaults(
    fake_gateway: FakeGateway, isolated_env: dict[str, str]
) -> None:
    env = {**isolated_env, "EVALMESH_ADDRESS": fake_gateway.address, "EVALMESH_API_KEY": "k"}
    assert invoke(env, "submit", "-c", "print(1)").exit_code == 0
    spec = fake_gateway.requests("CreateEvaluation")[0].spec
    assert not spec.limits.HasField("wall_timeout")
    assert not spec.limits.HasField("memory_bytes")
    assert spec.priority == evaluation_pb2.PRIORITY_UNSPECIFIED


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--memory", "12XB", "not a size"),
        ("--timeout", "soon", "not a duration"),
        ("--label", "novalue", "not key=value"),
        ("--priority", "urgent", "'urgent' is not one of"),
    ],
)
def test_malformed_flags_are_usage_errors_before_any_call(
    fake_gateway: FakeGateway, isolated_env: dict[str, str], flag: str, value: str, message: str
) -> None:
    env = {**isolated_env, "EVALMESH_ADDRESS": fake_gateway.address, "EVALMESH_API_KEY": "k"}
    result = invoke(env, "submit", "-c", "print(1)", flag, value)
    assert result.exit_code == 2
    assert message in result.stderr
    assert fake_gateway.calls == []


def test_a_rejected_field_is_shown_with_its_flag_and_bound(
    fake_gateway: FakeGateway, isolated_env: dict[str, str]
) -> None:
    fake_gateway.errors["CreateEvaluation"].append(
        rich_status(
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid request",
            violations=[
                ("spec.limits.wall_timeout", "must be between 1 and 900 seconds, got 1000")
            ],
        )
    )
    env = {**isolated_env, "EVALMESH_ADDRESS": fake_gateway.address, "EVALMESH_API_KEY": "k"}
    result = invoke(env, "submit", "-c", "print(1)", "--timeout", "1000s")
    assert result.exit_code == 2
    assert "spec.limits.wall_timeout (--timeout): must be between 1 and 900 seconds" in (
        result.stderr
    )
    assert "Traceback" not in result.output


def test_an_unknown_id_is_a_one_line_error_without_a_traceback(
    fake_gateway: FakeGateway, isolated_env: dict[str, str]
) -> None:
    env = {**isolated_env, "EVALMESH_ADDRESS": fake_gateway.address, "EVALMESH_API_KEY": "k"}
    result = invoke(env, "status", "ev-missing")
    assert result.exit_code == 1
    assert result.stderr == "evalmesh: not found: evaluation ev-missing not found\n"


def test_no_mesh_anywhere_says_to_run_evalmesh_up(isolated_env: dict[str, str]) -> None:
    result = invoke(isolated_env, "ls")
    assert result.exit_code == 69
    assert "evalmesh up" in result.stderr


def test_an_unreachable_mesh_says_to_run_evalmesh_up(
    isolated_env: dict[str, str], unused_port: int
) -> None:
    env = {**isolated_env, "EVALMESH_ADDRESS": f"127.0.0.1:{unused_port}", "EVALMESH_API_KEY": "k"}
    result = invoke(env, "--rpc-timeout", "2", "status", "ev-1")
    assert result.exit_code == 69
    assert f"cannot reach evalmesh at 127.0.0.1:{unused_port}" in result.stderr
    assert "evalmesh up" in result.stderr


def test_flags_beat_environment_which_beats_the_config_file(
    fake_gateway: FakeGateway, isolated_env: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'address = "{fake_gateway.address}"\napi_key = "from-file"\ntimeout = 7\n')
    env = {**isolated_env, "EVALMESH_CONFIG": str(config)}
    invoke(env, "submit", "-c", "1")
    invoke({**env, "EVALMESH_API_KEY": "from-env"}, "submit", "-c", "1")
    invoke({**env, "EVALMESH_API_KEY": "from-env"}, "--api-key", "from-flag", "submit", "-c", "1")
    keys = [metadata["authorization"] for _, _, metadata in fake_gateway.calls]
    assert keys == ["Bearer from-file", "Bearer from-env", "Bearer from-flag"]
    assert all(left is not None and 6 < left <= 7.1 for left in fake_gateway.deadlines)


def test_a_config_file_with_an_unknown_setting_is_a_usage_error(
    isolated_env: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('adress = "typo:1"\n')
    result = invoke({**isolated_env, "EVALMESH_CONFIG": str(config)}, "ls")
    assert result.exit_code == 2
    assert "unknown setting 'adress'" in result.stderr


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_a_completion_script_is_printed_for_each_shell(
    isolated_env: dict[str, str], shell: str
) -> None:
    result = invoke(isolated_env, "completion", shell)
    assert result.exit_code == 0
    assert "_EVALMESH_COMPLETE" in result.stdout


def test_the_exit_codes_are_documented_in_the_help(isolated_env: dict[str, str]) -> None:
    text = invoke(isolated_env, "run", "--help").stdout
    for line in ("124      TIMED_OUT", "137      MEMORY_LIMIT_EXCEEDED", "130      CANCELLED"):
        assert line in text


def evaluation(state: str, exit_code: int | None = None, signal: int | None = None) -> Evaluation:
    result = evaluation_pb2.EvaluationResult(exit_code=exit_code, signal=signal)
    message = evaluation_pb2.Evaluation(
        id="ev", state=evaluation_pb2.Evaluation.State.Value(f"STATE_{state}"), result=result
    )
    return Evaluation.from_proto(message)


@pytest.mark.parametrize(
    ("state", "exit_code", "signal", "expected"),
    [
        ("SUCCEEDED", 0, None, 0),
        ("FAILED", 3, None, 3),
        ("FAILED", None, 11, 139),
        ("FAILED", 256, None, 1),
        ("TIMED_OUT", None, 9, 124),
        ("OUTPUT_LIMIT_EXCEEDED", None, 9, 125),
        ("ERROR", None, None, 126),
        ("CANCELLED", None, None, 130),
        ("MEMORY_LIMIT_EXCEEDED", None, 9, 137),
    ],
)
def test_run_exits_with_the_documented_code_for_each_outcome(
    state: str, exit_code: int | None, signal: int | None, expected: int
) -> None:
    assert exit_code_for(evaluation(state, exit_code, signal)) == expected
