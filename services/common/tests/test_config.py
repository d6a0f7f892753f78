"""Config is read from a mapping once, typed, fails fast with every problem, and logs redacted."""

from __future__ import annotations

import json
from dataclasses import FrozenInstanceError, dataclass

import pytest

from evalmesh_common import (
    ConfigError,
    Seconds,
    Secret,
    describe,
    env_field,
    env_group,
    load_config,
    redact_url,
)
from evalmesh_common.server import ServerConfig


@dataclass(frozen=True)
class StorageConfig:
    server: ServerConfig = env_group(ServerConfig)
    database_url: Secret = env_field("EVALMESH_DATABASE_URL")
    nats_url: str = env_field("EVALMESH_NATS_URL")
    pool_size: int = env_field("EVALMESH_POOL_SIZE", default=5)
    ratio: float = env_field("EVALMESH_RATIO", default=0.5)
    sqlite: bool = env_field("EVALMESH_SQLITE", default=False)
    lease: Seconds = env_field("EVALMESH_LEASE", default=Seconds(30))
    max_jobs: int | None = env_field("EVALMESH_MAX_JOBS", default=None)
    admin_token: Secret | None = env_field("EVALMESH_ADMIN_TOKEN", default=None)


REQUIRED = {
    "EVALMESH_DATABASE_URL": "postgresql://evalmesh:hunter2@db:5432/evalmesh",
    "EVALMESH_NATS_URL": "nats://alice:s3cret@nats:4222",
}


def test_config_reports_every_missing_variable_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(StorageConfig, {"EVALMESH_POOL_SIZE": "many", "EVALMESH_SHUTDOWN_GRACE": "x"})
    problems = caught.value.problems
    assert len(problems) == 4
    assert any("EVALMESH_DATABASE_URL is required" in p for p in problems)
    assert any("EVALMESH_NATS_URL is required" in p for p in problems)
    assert any("EVALMESH_POOL_SIZE='many'" in p and "integer" in p for p in problems)
    assert any("EVALMESH_SHUTDOWN_GRACE='x'" in p and "duration" in p for p in problems)
    assert "4 problems" in str(caught.value)


def test_config_parses_each_supported_type_from_strings() -> None:
    environ = {
        **REQUIRED,
        "EVALMESH_POOL_SIZE": "12",
        "EVALMESH_RATIO": "0.25",
        "EVALMESH_SQLITE": "Yes",
        "EVALMESH_LEASE": "1500ms",
        "EVALMESH_MAX_JOBS": "3",
        "EVALMESH_ADMIN_TOKEN": "tok",
        "EVALMESH_SHUTDOWN_GRACE": "2m",
        "EVALMESH_LISTEN_ADDRESS": "0.0.0.0:50051",
    }
    config = load_config(StorageConfig, environ)
    assert (config.pool_size, config.ratio, config.sqlite) == (12, 0.25, True)
    assert (config.lease, config.max_jobs, config.server.shutdown_grace) == (1.5, 3, 120.0)
    assert config.server.listen_address == "0.0.0.0:50051"
    assert config.database_url.reveal() == REQUIRED["EVALMESH_DATABASE_URL"]
    assert config.admin_token == Secret("tok")


def test_config_defaults_apply_when_a_variable_is_unset_or_empty() -> None:
    config = load_config(StorageConfig, {**REQUIRED, "EVALMESH_POOL_SIZE": ""})
    assert (config.pool_size, config.max_jobs, config.admin_token) == (5, None, None)
    assert config.server == ServerConfig()


def test_config_is_frozen() -> None:
    config = load_config(StorageConfig, REQUIRED)
    with pytest.raises(FrozenInstanceError):
        config.pool_size = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("EVALMESH_SQLITE", "maybe"),
        ("EVALMESH_RATIO", "nan"),
        ("EVALMESH_LEASE", "-3s"),
        ("EVALMESH_LEASE", "3 days"),
        ("EVALMESH_PROBE_INTERVAL", "0"),
        ("EVALMESH_LOG_LEVEL", "chatty"),
    ],
)
def test_config_rejects_values_it_cannot_use(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(StorageConfig, {**REQUIRED, variable: value})
    assert len(caught.value.problems) == 1


def test_config_description_redacts_secrets_and_url_passwords() -> None:
    config = load_config(StorageConfig, {**REQUIRED, "EVALMESH_ADMIN_TOKEN": "tok-123"})
    described = describe(config)
    text = json.dumps(described)
    for secret in ("hunter2", "s3cret", "tok-123"):
        assert secret not in text
    assert described["database_url"] == "**********"
    assert described["nats_url"] == "nats://alice:***@nats:4222"
    assert described["server"]["listen_address"] == "127.0.0.1:0"
    assert described["pool_size"] == 5
    assert "hunter2" not in repr(config)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("nats://token@h:4222", "nats://***@h:4222"),
        ("nats://a:b@h1:4222,nats://a:b@h2:4222", "nats://a:***@h1:4222,nats://a:***@h2:4222"),
        ("postgresql://u:p@h1,h2/db", "postgresql://u:***@h1,h2/db"),
        ("postgresql://h/db?user=u&password=p", "postgresql://h/db?user=u&password=***"),
        ("postgresql://h/db?sslmode=require", "postgresql://h/db?sslmode=require"),
        ("127.0.0.1:50051", "127.0.0.1:50051"),
        ("sqlite:///var/lib/evalmesh.db", "sqlite:///var/lib/evalmesh.db"),
    ],
)
def test_url_credentials_are_masked_and_the_rest_kept(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_secret_hides_itself_from_repr_and_str() -> None:
    secret = Secret("hunter2")
    assert "hunter2" not in repr(secret)
    assert "hunter2" not in str(secret)
    assert f"{secret}" == "**********"
