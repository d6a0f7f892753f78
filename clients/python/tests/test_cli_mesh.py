"""The ``evalmesh`` command driven as a user would, as a subprocess against the real mesh."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from client_mesh import Cli, Mesh, evalmesh_command, wait_until

from evalmesh.client import Client, State

pytestmark = pytest.mark.slow


def test_run_streams_raw_bytes_to_stdout_and_stderr_and_exits_with_the_programs_code(
    evalmesh: Cli,
) -> None:
    code = (
        "import sys\nsys.stdout.buffer.write(b'\\xff\\xfe raw\\n')\n"
        "print('oops', file=sys.stderr)\nsys.exit(3)\n"
    )
    result = evalmesh("run", "-", stdin=code.encode())
    assert result.returncode == 3
    assert result.stdout == b"\xff\xfe raw\n"
    assert result.stderr == b"oops\n"


@pytest.mark.parametrize(
    ("args", "code", "exit_code", "note"),
    [
        ((), "print('fine')", 0, ""),
        (("--timeout", "1s"), "import time; time.sleep(10)", 124, "TIMED_OUT"),
        (("--memory", "32M"), "x = bytearray(256 * 1024 * 1024)", 137, "MEMORY_LIMIT_EXCEEDED"),
        (("--max-output", "1K"), "print('x' * 5000)", 125, "OUTPUT_LIMIT_EXCEEDED"),
        ((), "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", 139, "SIGSEGV"),
    ],
)
def test_run_exits_with_the_documented_code_for_each_outcome(
    evalmesh: Cli, args: tuple[str, ...], code: str, exit_code: int, note: str
) -> None:
    result = evalmesh("run", *args, "-c", code)
    assert result.returncode == exit_code, result.stderr
    assert note.encode() in result.stderr


def test_ctrl_c_cancels_the_evaluation_and_exits_130(
    cli_env: dict[str, str], tmp_path: Path, client: Client
) -> None:
    code = "import time\nprint('started', flush=True)\ntime.sleep(60)\n"
    process = subprocess.Popen(
        [*evalmesh_command(), "run", "-c", code, "--label", "ctrl-c=1"],
        env=cli_env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == b"started\n"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130
    assert b"cancelling ev_" in stderr
    evaluation_id = stderr.split(b"cancelling ", 1)[1].split()[0].decode()
    assert wait_until(client, evaluation_id, lambda e: e.terminal).state is State.CANCELLED


def test_ls_json_lists_the_evaluations_a_filter_selects(evalmesh: Cli) -> None:
    label = f"ls={uuid.uuid4().hex[:10]}"
    ids = [
        evalmesh("submit", "-c", "print(1)", "--label", label).stdout.decode().strip()
        for _ in range(3)
    ]
    listed = json.loads(evalmesh("ls", "--label", label, "--json").stdout)
    assert sorted(item["id"] for item in listed) == sorted(ids)
    table = evalmesh("ls", "--label", label).stdout.decode()
    assert all(evaluation_id in table for evaluation_id in ids)
    assert "STATE" in table.splitlines()[0]


def test_logs_follow_streams_output_until_the_evaluation_ends(evalmesh: Cli) -> None:
    code = "import time\nfor i in range(4):\n    print(i, flush=True)\n    time.sleep(0.4)\n"
    evaluation_id = evalmesh("submit", "-c", code).stdout.decode().strip()
    followed = evalmesh("logs", evaluation_id, "--follow")
    assert followed.returncode == 0
    assert followed.stdout == b"0\n1\n2\n3\n"
    assert evalmesh("logs", evaluation_id).stdout == b"0\n1\n2\n3\n"
    status = json.loads(evalmesh("status", evaluation_id, "--json").stdout)
    assert (status["state"], status["exit_code"]) == ("SUCCEEDED", 0)


def test_cancel_stops_a_running_evaluation(evalmesh: Cli, client: Client) -> None:
    evaluation_id = evalmesh("submit", "-c", "import time; time.sleep(60)").stdout.decode().strip()
    wait_until(client, evaluation_id, lambda e: e.state is not State.QUEUED)
    result = evalmesh("cancel", evaluation_id, "--reason", "test")
    assert result.returncode == 0
    assert result.stdout.decode().startswith(evaluation_id)
    assert wait_until(client, evaluation_id, lambda e: e.terminal).state is State.CANCELLED


def test_keys_are_created_listed_used_and_revoked(evalmesh: Cli) -> None:
    tenant = f"cli-{uuid.uuid4().hex[:8]}"
    created = json.loads(evalmesh("keys", "create", "--tenant", tenant, "--json").stdout)
    listed = json.loads(evalmesh("keys", "list", "--tenant", tenant, "--json").stdout)
    assert [key["id"] for key in listed] == [created["id"]]
    as_user = evalmesh("run", "-c", "print('hi')", EVALMESH_API_KEY=created["secret"])
    assert (as_user.returncode, as_user.stdout) == (0, b"hi\n")
    assert evalmesh("keys", "revoke", created["id"]).returncode == 0
    refused = evalmesh("ls", EVALMESH_API_KEY=created["secret"])
    assert refused.returncode == 1
    assert b"API key was refused" in refused.stderr


def test_user_mistakes_get_one_helpful_line_and_no_traceback(evalmesh: Cli, tmp_path: Path) -> None:
    unknown = evalmesh("status", "ev_doesnotexist")
    assert (unknown.returncode, unknown.stderr.startswith(b"evalmesh: not found")) == (1, True)
    bounds = evalmesh("run", "-c", "print(1)", "--timeout", "1000s", "--max-processes", "999")
    assert bounds.returncode == 2
    assert b"spec.limits.wall_timeout (--timeout): must be between 1 and 900 seconds" in (
        bounds.stderr
    )
    assert b"spec.limits.max_processes (--max-processes)" in bounds.stderr
    missing = evalmesh("run", str(tmp_path / "missing.py"))
    assert missing.returncode == 2
    assert b"cannot read" in missing.stderr
    nowhere = evalmesh("ls", EVALMESH_ADDRESS="", EVALMESH_API_KEY="")
    assert nowhere.returncode == 69
    assert b"evalmesh up" in nowhere.stderr
    for result in (unknown, bounds, missing, nowhere):
        assert b"Traceback" not in result.stderr


def test_batch_runs_a_folder_with_progress_and_a_summary(evalmesh: Cli, tmp_path: Path) -> None:
    folder = tmp_path / "jobs"
    folder.mkdir()
    for index in range(5):
        (folder / f"ok{index}.py").write_text(f"print({index})\n")
    (folder / "bad.py").write_text("raise SystemExit(4)\n")
    result = evalmesh("batch", str(folder), COLUMNS="120")
    assert result.returncode == 1  # one program failed
    summary = result.stdout.decode()
    assert "6 evaluations: 5 SUCCEEDED, 1 FAILED" in summary
    assert "bad.py" in summary
    assert "ok4.py" in summary
    assert b"submitted" in result.stderr
    assert b"finished" in result.stderr
    report = json.loads(evalmesh("batch", str(folder / "ok*.py"), "--json").stdout)
    assert report["counts"] == {"SUCCEEDED": 5}
    assert [Path(item["file"]).name for item in report["evaluations"]] == [
        f"ok{i}.py" for i in range(5)
    ]


def test_a_local_mesh_is_found_through_its_state_file(
    evalmesh: Cli, mesh: Mesh, tmp_path: Path
) -> None:
    project = tmp_path / "project" / "src"
    project.mkdir(parents=True)
    started = time.monotonic()
    result = subprocess.run(
        [*evalmesh_command(), "run", "-c", "print('found')"],
        env={
            **evalmesh.env,
            "EVALMESH_ADDRESS": "",
            "EVALMESH_API_KEY": "",
            "EVALMESH_HOME": str(mesh.state_dir),
        },
        cwd=project,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout) == (0, b"found\n"), result.stderr
    assert time.monotonic() - started < 60
