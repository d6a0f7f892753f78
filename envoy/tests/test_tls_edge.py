"""The edge with TLS: HTTPS with the security headers, a redirect from HTTP, and the settings it
refuses; rendered, validated and served by the real Envoy."""

from __future__ import annotations

import dataclasses
import http.client
import json
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from evalmesh_deploy.certs import TlsFiles, local_tls
from evalmesh_envoy import HSTS, EdgeSettings, render_yaml
from evalmesh_envoy.healthcheck import check

ENVOY = Path(sys.executable).parent / "envoy"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return local_tls(tmp_path_factory.mktemp("tls"))


def _settings(tls: TlsFiles, **changes: Any) -> EdgeSettings:
    base = EdgeSettings(
        listen_host="127.0.0.1",
        listen_port=0,
        gateway_host="127.0.0.1",
        gateway_port=9,
        tls_cert_file=tls.cert,
        tls_key_file=tls.key,
    )
    return dataclasses.replace(base, **changes)


def _listeners(settings: EdgeSettings) -> list[Any]:
    return list(yaml.safe_load(render_yaml(settings))["staticResources"]["listeners"])


def test_tls_config_with_redirect_passes_envoy_validation(tmp_path: Path, tls: TlsFiles) -> None:
    path = tmp_path / "envoy.yaml"
    path.write_text(render_yaml(_settings(tls, listen_port=18443, http_redirect_port=18080)))
    done = subprocess.run(
        [str(ENVOY), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_tls_listener_offers_h2_and_http1_from_tls_1_2(tls: TlsFiles) -> None:
    listener = _listeners(_settings(tls))[0]
    socket = listener["filterChains"][0]["transportSocket"]
    assert socket["name"] == "envoy.transport_sockets.tls"
    context = socket["typedConfig"]["commonTlsContext"]
    assert context["alpnProtocols"] == ["h2", "http/1.1"]
    assert context["tlsParams"]["tlsMinimumProtocolVersion"] == "TLSv1_2"
    assert context["tlsCertificates"][0]["certificateChain"]["filename"] == str(tls.cert)


def test_a_certificate_without_its_key_and_a_redirect_without_tls_are_refused(
    tls: TlsFiles,
) -> None:
    with pytest.raises(ValueError, match="go together"):
        _settings(tls, tls_key_file=None)
    with pytest.raises(ValueError, match="needs TLS"):
        _settings(tls, tls_cert_file=None, tls_key_file=None, http_redirect_port=8080)


def test_a_gateway_named_by_host_is_resolved_by_dns_and_an_address_is_static(
    tls: TlsFiles,
) -> None:
    def kind(host: str) -> str:
        document = yaml.safe_load(render_yaml(_settings(tls, gateway_host=host)))
        return str(document["staticResources"]["clusters"][0]["type"])

    assert kind("gateway") == "STRICT_DNS"
    assert kind("127.0.0.1") == "STATIC"
    assert kind("::1") == "STATIC"


def test_the_redirect_to_port_443_leaves_the_port_out(tls: TlsFiles) -> None:
    def redirect(port: int) -> Any:
        settings = _settings(tls, http_redirect_port=8080, public_https_port=port)
        listener = _listeners(settings)[1]
        manager = listener["filterChains"][0]["filters"][0]["typedConfig"]
        return manager["routeConfig"]["virtualHosts"][0]["routes"][0]["redirect"]

    assert redirect(443) == {"httpsRedirect": True, "responseCode": "PERMANENT_REDIRECT"}
    assert redirect(8443)["portRedirect"] == 8443


@dataclasses.dataclass(frozen=True)
class Served:
    https: int
    http: int
    ca: Path


def _ports(admin: str) -> dict[str, int]:
    with urllib.request.urlopen(f"http://{admin}/listeners?format=json", timeout=5) as reply:
        statuses = json.load(reply)["listener_statuses"]
    return {s["name"]: int(s["local_address"]["socket_address"]["port_value"]) for s in statuses}


@pytest.fixture
def served(tmp_path: Path, tls: TlsFiles) -> Iterator[Served]:
    build = tmp_path / "dist"
    build.mkdir()
    (build / "index.html").write_text("<!doctype html><title>evalmesh</title><div id=root></div>")
    (build / "assets").mkdir()
    (build / "assets" / "app.js").write_text("console.log('ui');")
    settings = _settings(tls, static_dir=build, http_redirect_port=0, public_https_port=443)
    config = tmp_path / "envoy.yaml"
    config.write_text(render_yaml(settings))
    admin_file = tmp_path / "admin.txt"
    argv = [str(ENVOY), "-c", str(config), "--disable-hot-restart", "--log-level", "error"]
    process = subprocess.Popen(
        [*argv, "--admin-address-path", str(admin_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not (admin_file.exists() and admin_file.read_text().strip()):
            assert process.poll() is None, "envoy exited during start"
            assert time.monotonic() < deadline, "envoy did not start"
            time.sleep(0.05)
        ports = _ports(admin_file.read_text().strip())
        yield Served(https=ports["edge"], http=ports["edge_redirect"], ca=tls.ca)
    finally:
        process.terminate()
        process.wait(timeout=10)


def _https(served: Served, path: str) -> tuple[int, dict[str, str], bytes]:
    context = ssl.create_default_context(cafile=str(served.ca))
    connection = http.client.HTTPSConnection("localhost", served.https, context=context, timeout=10)
    try:
        connection.request("GET", path)
        reply = connection.getresponse()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
    finally:
        connection.close()


def test_every_https_answer_carries_hsts_csp_nosniff_and_frame_denial(served: Served) -> None:
    for path, status in (
        ("/", 200),
        ("/assets/app.js", 200),
        ("/evaluations/x", 200),
        ("/assets/missing.js", 404),
    ):
        got, headers, _ = _https(served, path)
        assert got == status, path
        assert headers["strict-transport-security"] == HSTS, path
        csp = headers["content-security-policy"]
        assert "default-src 'none'" in csp
        assert "script-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"


def test_plain_http_is_redirected_permanently_to_https(served: Served) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", served.http, timeout=10)
    try:
        connection.request("GET", "/evaluations?page=2", headers={"host": "evalmesh.example"})
        reply = connection.getresponse()
        assert reply.status == 308
        assert reply.getheader("location") == "https://evalmesh.example/evaluations?page=2"
        assert reply.getheader("strict-transport-security") is None
    finally:
        connection.close()


def test_the_edge_health_check_reports_a_missing_gateway_as_unhealthy(served: Served) -> None:
    assert check(f"https://127.0.0.1:{served.https}") != "SERVING"
