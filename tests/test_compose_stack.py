"""docker-compose.yml for real: images built offline, the stack up, used over TLS, abused,
restarted.

One stack for the module (building and starting it is the expensive part), so the tests run in
order: the walkthrough, the edge, the sandbox rows, a restart, then down and up again with the
data kept. Slow (a first run builds every image: minutes; later runs reuse the engine's cache);
CI runs it, `scripts/test -m 'not slow'` skips it.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from evalmesh_deploy.prometheus import scrape_targets
from evalmesh_testing.docker_engine import Engine, engine_for_tests
from tests.compose_stack import COMPOSE, ROOT, ComposeStack, build_images

pytestmark = [pytest.mark.slow, pytest.mark.docker]

SERVICES = {"postgres", "nats", "storage", "scheduler", "executor-pool", "gateway", "edge",
            "prometheus"}  # fmt: skip
ONE_SHOTS = {"setup", "bootstrap"}


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with engine_for_tests() as found:
        if isinstance(found, str):
            pytest.skip(found)
        yield found


@pytest.fixture(scope="module")
def stack(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeStack]:
    build_images(engine)
    composed = ComposeStack(engine, tmp_path_factory.mktemp("compose"))
    try:
        composed.up()
        yield composed
    finally:
        composed.down(volumes=True)


@pytest.fixture(scope="module")
def key(stack: ComposeStack) -> str:
    return stack.admin_key()


def _readme_block() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Deploy on one server") :]
    section = section[section.index("### Use it") :]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match, "the README's deployment walkthrough has no bash block"
    return match.group(1)


def test_every_service_is_healthy_and_the_one_shots_finished(stack: ComposeStack) -> None:
    states = {entry["Service"]: entry for entry in stack.services()}
    assert set(states) >= SERVICES | ONE_SHOTS
    for service in SERVICES:
        assert states[service]["Health"] == "healthy", states[service]
    for service in ONE_SHOTS:
        assert states[service]["State"] == "exited", states[service]
        assert states[service]["ExitCode"] == 0, states[service]


def test_images_run_as_their_documented_users_and_carry_labels(stack: ComposeStack) -> None:
    for service in SERVICES - {"executor-pool"}:
        config = stack.inspect(service)["Config"]
        assert config["User"] not in ("", "0", "root", "0:0"), service
        labels = config["Labels"]
        assert labels["org.opencontainers.image.version"], service
        assert labels["org.opencontainers.image.revision"] not in ("", "unknown"), service
    # The executor starts as root only to delegate its cgroups: its processes are evalmesh's.
    top = stack.docker("top", stack.container("executor-pool"), "-o", "pid,user,args")
    users = {line.split()[1] for line in top.splitlines()[1:] if line.strip()}
    assert users == {"10001"}, top
    status = stack.docker("exec", stack.container("executor-pool"), "cat", "/proc/1/status")
    effective = next(line for line in status.splitlines() if line.startswith("CapEff:"))
    assert effective.split()[1] == "0000000000000000", effective


def test_the_readme_walkthrough_runs_over_tls(stack: ComposeStack) -> None:
    # `docker compose` in the README is this project's compose with the test's settings.
    compose = COMPOSE
    shim = (
        f'docker() {{ if [ "$1" = compose ]; then shift; "{compose}" -p {stack.project} '
        f'--env-file "{stack.env_file}" "$@"; else command docker "$@"; fi; }}\n'
    )
    script = "set -euo pipefail\n" + shim + _readme_block()
    done = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, env=stack.env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert base64.b64encode(b"hello from evalmesh\n").decode() in done.stdout
    assert "STATE_SUCCEEDED" in done.stdout
    assert "hello over TLS" in done.stdout


def test_the_cli_and_grpcurl_speak_tls_and_plaintext_is_refused(
    stack: ComposeStack, key: str
) -> None:
    done = stack.evalmesh("run", "-c", "import sys; print('over TLS'); sys.exit(3)", key=key)
    assert (done.returncode, done.stdout) == (3, "over TLS\n"), done.stderr
    listing = stack.grpcurl(stack.gateway, "list")
    assert "evalmesh.v1.EvaluationService" in listing.stdout, listing.stderr
    plaintext = subprocess.run(
        [str(Path(listing.args[0])), "-plaintext", stack.gateway, "list"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert plaintext.returncode != 0


def test_the_edge_serves_the_ui_with_security_headers_and_grpc_web(stack: ComposeStack) -> None:
    status, headers, body = stack.https_get("/")
    assert status == 200
    assert b'<div id="root">' in body
    assert headers["strict-transport-security"].startswith("max-age=")
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "default-src 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    # SERVING (field 1 = 1) in a gRPC-web data frame, then the trailers.
    assert stack.grpc_web_health().startswith(b"\x00\x00\x00\x00\x02\x08\x01")


def test_plain_http_redirects_to_https(stack: ComposeStack) -> None:
    done = subprocess.run(
        ["python3", "-c", _REDIRECT_PROBE, f"{stack.http}/evaluations?x=1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    status, location = done.stdout.split()
    assert status == "308"
    assert location == f"https://localhost:{stack.settings['EVALMESH_HTTPS_PORT']}/evaluations?x=1"


_REDIRECT_PROBE = """
import http.client, sys, urllib.parse
url = urllib.parse.urlsplit(sys.argv[1])
conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
conn.request("GET", url.path + "?" + url.query)
reply = conn.getresponse()
print(reply.status, reply.getheader("location"))
"""

# Run inside a sandbox of the composed stack: every way out it tries must fail, and fast.
_HOSTILE = """
import ctypes, json, os, socket, time
targets = json.loads({targets!r})
for host, port in targets:
    started = time.monotonic()
    try:
        socket.create_connection((host, port), timeout=2).close()
        print("ESCAPED tcp", host, port)
    except OSError:
        if time.monotonic() - started > 0.1:
            print("SLOW tcp", host, port)
for path in ("/var/run/docker.sock", "/run/containerd/containerd.sock"):
    try:
        socket.socket(socket.AF_UNIX).connect(path)
        print("ESCAPED unix", path)
    except OSError:
        pass
for name in ("nats", "postgres", "storage", "gateway", "example.com"):
    started = time.monotonic()
    try:
        socket.getaddrinfo(name, 80)
        print("ESCAPED dns", name)
    except OSError:
        if time.monotonic() - started > 0.1:
            print("SLOW dns", name)
for path in ("/proc/sysrq-trigger", "/proc/sys/kernel/printk_ratelimit", "/etc/escape",
             "/usr/escape", "/sys/kernel/uevent_helper"):
    try:
        with open(path, "w") as handle:
            handle.write("1")
        print("ESCAPED write", path)
    except OSError:
        pass
try:
    open("/etc/shadow").read()
    print("ESCAPED read /etc/shadow")
except OSError:
    pass
others = {{int(p) for p in os.listdir("/proc") if p.isdigit()}} - {{1, os.getpid()}}
if others:
    print("ESCAPED processes", sorted(others))
libc = ctypes.CDLL(None, use_errno=True)
if libc.unshare(0x10000000) == 0:
    print("ESCAPED unshare")
if libc.ptrace(16, 1, 0, 0) == 0:
    print("ESCAPED ptrace")
print("env", sorted(os.environ))
print("DONE")
"""


def test_a_sandbox_reaches_no_platform_service_and_no_host(stack: ComposeStack, key: str) -> None:
    ports = {"nats": 4222, "postgres": 5432, "storage": 50053, "scheduler": 50052,
             "gateway": 50050, "executor-pool": 50054, "edge": 8443}  # fmt: skip
    targets = [
        [address, port]
        for service, port in ports.items()
        for address in stack.addresses(service).values()
    ]
    targets += [[gateway, port] for gateway in stack.gateways() for port in (22, 80, 2375, 4222)]
    targets += [["169.254.169.254", 80], ["127.0.0.1", 4222], ["127.0.0.1", 50054]]
    code = _HOSTILE.format(targets=json.dumps(targets))
    done = stack.evalmesh("run", "-c", code, key=key)
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith("DONE"), done.stdout
    assert "ESCAPED" not in done.stdout, done.stdout
    assert "SLOW" not in done.stdout, done.stdout
    env_line = next(line for line in done.stdout.splitlines() if line.startswith("env"))
    assert "PG" not in env_line, env_line
    assert "EVALMESH" not in env_line, env_line


_DAEMON = """
import os, sys
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c",
                 "import time; time.sleep(1000)  # evalmesh-daemon-canary"])
    os._exit(0)
print("parent done")
"""


def _rule_groups() -> set[str]:
    rules = ROOT / "services" / "prometheus" / "rules"
    documents = [yaml.safe_load(path.read_text()) for path in rules.glob("*.rules.yml")]
    return {group["name"] for document in documents for group in document["groups"]}


def test_prometheus_scrapes_every_service_and_evaluates_the_shipped_rules(
    stack: ComposeStack,
) -> None:
    # A target is scraped every 15 s, so one that came up after Prometheus can take that long.
    wanted = dict.fromkeys(scrape_targets(), "1")
    deadline = time.monotonic() + 60
    while True:
        samples = stack.prometheus("query", query="up")["result"]
        up = {sample["metric"]["job"]: sample["value"][1] for sample in samples}
        if up == wanted or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert up == wanted
    groups = stack.prometheus("rules")["groups"]
    assert {group["name"] for group in groups} == _rule_groups()
    unhealthy = [rule for group in groups for rule in group["rules"] if rule["health"] == "err"]
    assert unhealthy == []


def _sandbox_processes(stack: ComposeStack) -> list[str]:
    top = stack.docker("top", stack.container("executor-pool"), "-o", "pid,args")
    return top.splitlines()[1:]


def test_teardown_kills_every_process_of_a_job(stack: ComposeStack, key: str) -> None:
    done = stack.evalmesh("run", "-c", _DAEMON, key=key)
    assert (done.returncode, done.stdout) == (0, "parent done\n"), done.stderr
    bomb = "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass\n"
    timed_out = stack.evalmesh("run", "--timeout", "2s", "-c", bomb, key=key)
    assert timed_out.returncode == 124, timed_out.stderr
    deadline = time.monotonic() + 1.0
    while any("evalmesh-daemon-canary" in line for line in _sandbox_processes(stack)):
        assert time.monotonic() < deadline, _sandbox_processes(stack)
        time.sleep(0.1)
    # What is left is the executor and the sandboxes prepared for the next jobs (two per slot,
    # three processes each: bwrap's monitor, the sandbox's pid 1 and its interpreter), no more.
    prepared = 2 * 2
    assert len(_sandbox_processes(stack)) <= 1 + 3 * prepared, _sandbox_processes(stack)


def _submit(stack: ComposeStack, key: str, code: str) -> str:
    done = stack.evalmesh("--json", "submit", "-c", code, key=key)
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["id"])


def _wait_terminal(stack: ComposeStack, key: str, ids: list[str]) -> dict[str, str]:
    states: dict[str, str] = {}
    deadline = time.monotonic() + 180
    while len(states) < len(ids):
        for evaluation in ids:
            if evaluation in states:
                continue
            done = stack.evalmesh("--json", "status", evaluation, key=key)
            state = json.loads(done.stdout)["state"] if done.returncode == 0 else ""
            if state not in ("", "QUEUED", "RUNNING"):
                states[evaluation] = state
        assert time.monotonic() < deadline, states
        time.sleep(1)
    return states


@pytest.mark.parametrize(
    "service", ["executor-pool", "storage", "scheduler", "gateway", "nats", "postgres", "edge"]
)
def test_a_restarted_service_rejoins_and_no_evaluation_is_lost(
    stack: ComposeStack, key: str, service: str
) -> None:
    ids = [_submit(stack, key, f"import time; time.sleep(2); print({n})") for n in range(4)]
    stack.compose("restart", service, timeout=180)
    stack.wait_healthy(service)
    ids += [_submit(stack, key, f"print({n})") for n in range(4, 6)]
    states = _wait_terminal(stack, key, ids)
    assert set(states.values()) == {"SUCCEEDED"}, states


def test_down_and_up_keeps_evaluations_keys_and_certificates(stack: ComposeStack, key: str) -> None:
    evaluation = _submit(stack, key, "print('kept')")
    assert _wait_terminal(stack, key, [evaluation]) == {evaluation: "SUCCEEDED"}
    ca = stack.ca.read_bytes()
    stack.down()
    stack.up()
    assert stack.ca.read_bytes() == ca
    assert stack.admin_key() == key
    logs = stack.evalmesh("logs", evaluation, key=key)
    assert logs.stdout == "kept\n", logs.stderr
