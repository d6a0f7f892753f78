"""run()/main(): fail fast on config, log it redacted, serve, and map outcomes to exit codes."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import pytest

from evalmesh_common import Secret, env_field, env_group
from evalmesh_common.server import ServerConfig, ServiceApp
from evalmesh_common.server.runner import EXIT_CONFIG, main

pytestmark = pytest.mark.usefixtures("restore_logging")


@dataclass(frozen=True)
class AppConfig:
    server: ServerConfig = env_group(ServerConfig)
    database_url: Secret = env_field("EVALMESH_DATABASE_URL")


async def build_and_stop_soon(config: AppConfig) -> ServiceApp:
    app = ServiceApp("demo", config.server)
    asyncio.get_running_loop().call_later(0.1, app.request_shutdown)
    return app


async def build_broken(config: AppConfig) -> ServiceApp:
    raise RuntimeError("cannot reach the database")


def _logs(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines()]


def test_bad_config_exits_with_ex_config_and_logs_every_problem(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main("demo", AppConfig, build_and_stop_soon, {"EVALMESH_SHUTDOWN_GRACE": "soon"})

    assert code == EXIT_CONFIG
    (line,) = _logs(capsys)
    assert (line["severity"], line["service"]) == ("ERROR", "demo")
    problems = line["problems"]
    assert isinstance(problems, list)
    assert len(problems) == 2


def test_a_clean_shutdown_exits_zero_and_the_config_is_logged_redacted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    environ = {"EVALMESH_DATABASE_URL": "postgresql://u:hunter2@db/evalmesh"}

    assert main("demo", AppConfig, build_and_stop_soon, environ) == 0

    logs = _logs(capsys)
    assert "hunter2" not in json.dumps(logs)
    starting = next(line for line in logs if line["message"] == "starting demo")
    config = starting["config"]
    assert isinstance(config, dict)
    assert config["database_url"] == "**********"
    assert config["server"]["listen_address"] == "127.0.0.1:0"
    assert logs[-1]["message"] == "demo stopped"


def test_a_crash_while_building_exits_one_with_the_traceback_logged(
    capsys: pytest.CaptureFixture[str],
) -> None:
    environ = {"EVALMESH_DATABASE_URL": "sqlite:///tmp/x.db"}

    assert main("demo", AppConfig, build_broken, environ) == 1

    crash = _logs(capsys)[-1]
    assert crash["message"] == "demo crashed"
    assert "cannot reach the database" in str(crash["exception"])
