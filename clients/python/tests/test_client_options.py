"""Parsing of sizes, durations, enums and the address/key lookup order of the library."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from evalmesh.client import (
    ConfigurationError,
    Priority,
    State,
    parse_duration,
    parse_size,
    resolve_target,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10.0), ("1m30s", 90.0), ("500ms", 0.5), ("2.5", 2.5), ("1h", 3600.0), (" 2m ", 120.0)],
)
def test_durations_accept_units_and_plain_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_durations_accept_numbers_and_timedeltas() -> None:
    assert parse_duration(3) == 3.0
    assert parse_duration(timedelta(minutes=2)) == 120.0


@pytest.mark.parametrize("text", ["10x", "s", "1m30", "ten seconds", ""])
def test_malformed_durations_are_rejected_with_an_example(text: str) -> None:
    with pytest.raises(ValueError, match=r"e\.g\. 10s"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("256M", 256 * 1024**2),
        ("256MiB", 256 * 1024**2),
        ("1g", 1024**3),
        ("512k", 512 * 1024),
        ("1048576", 1048576),
        ("1.5K", 1536),
    ],
)
def test_sizes_use_powers_of_1024(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["12XB", "M", "-1M", "lots"])
def test_malformed_sizes_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


def test_priorities_and_states_parse_in_any_case_and_map_to_the_contract() -> None:
    assert Priority.parse("high") is Priority.HIGH
    assert Priority.parse("PRIORITY_LOW") is Priority.LOW
    assert State.parse("timed-out") is State.TIMED_OUT
    assert State.from_proto(State.CANCELLED.to_proto()) is State.CANCELLED
    with pytest.raises(ValueError, match="use one of high, normal, low"):
        Priority.parse("urgent")


def test_only_terminal_states_say_so() -> None:
    assert [state for state in State if state.terminal] == [
        State.SUCCEEDED,
        State.FAILED,
        State.TIMED_OUT,
        State.MEMORY_LIMIT_EXCEEDED,
        State.OUTPUT_LIMIT_EXCEEDED,
        State.CANCELLED,
        State.ERROR,
    ]


def write_state(folder: Path, gateway: str, key: str) -> Path:
    state = folder / ".evalmesh" / "mesh.json"
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"gateway": gateway, "admin_api_key": key}))
    return state


def test_arguments_win_over_the_environment(tmp_path: Path) -> None:
    env = {"EVALMESH_ADDRESS": "env:1", "EVALMESH_API_KEY": "env-key"}
    target = resolve_target("arg:1", "arg-key", env, tmp_path)
    assert (target.address, target.api_key) == ("arg:1", "arg-key")
    target = resolve_target(None, None, env, tmp_path)
    assert (target.address, target.api_key) == ("env:1", "env-key")


def test_the_local_state_file_is_found_by_walking_up_from_the_working_directory(
    tmp_path: Path,
) -> None:
    write_state(tmp_path, "127.0.0.1:5000", "local-key")
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    target = resolve_target(None, None, {}, nested)
    assert (target.address, target.api_key) == ("127.0.0.1:5000", "local-key")
    assert "mesh.json" in target.source


def test_evalmesh_home_names_the_state_folder(tmp_path: Path) -> None:
    state = write_state(tmp_path / "elsewhere", "127.0.0.1:6000", "home-key")
    target = resolve_target(None, None, {"EVALMESH_HOME": str(state.parent)}, tmp_path)
    assert target.api_key == "home-key"


def test_the_local_admin_key_is_never_sent_to_another_address(tmp_path: Path) -> None:
    write_state(tmp_path, "127.0.0.1:5000", "local-key")
    with pytest.raises(ConfigurationError, match="no evalmesh API key"):
        resolve_target("remote.example:443", None, {}, tmp_path)
    assert resolve_target("127.0.0.1:5000", None, {}, tmp_path).api_key == "local-key"


def test_no_address_anywhere_says_to_run_evalmesh_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="evalmesh up") as caught:
        resolve_target(None, None, {}, tmp_path)
    assert caught.value.reason == "NO_ADDRESS"
    assert caught.value.code is None
