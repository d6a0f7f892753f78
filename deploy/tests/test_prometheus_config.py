"""prometheus.yml is the catalog rendered: every component with a metrics port is scraped at its
compose service name, the shipped rules are what ``rule_files`` loads, promtool accepts the
file, and compose runs evalmesh/prometheus with those rules where the file looks for them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from evalmesh_deploy.catalog import COMPONENTS, PROMETHEUS, SERVICES
from evalmesh_deploy.compose import render as render_compose
from evalmesh_deploy.prometheus import CONFIG_DIR, RULE_FILES, render, scrape_targets

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "services" / "prometheus" / "rules"


def _config() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(render())
    return config


def _scraped() -> dict[str, list[str]]:
    return {
        job["job_name"]: [target for group in job["static_configs"] for target in group["targets"]]
        for job in _config()["scrape_configs"]
    }


def test_every_component_with_a_metrics_port_is_scraped_at_its_service_name() -> None:
    with_metrics = {c.name for c in COMPONENTS.values() if "metrics" in c.ports}
    assert with_metrics >= {service.name for service in SERVICES}
    scraped = _scraped()
    assert set(scraped) == with_metrics | {PROMETHEUS.name}
    for name in with_metrics:
        assert scraped[name] == [f"{name}:{COMPONENTS[name].ports['metrics']}"]
    assert scraped[PROMETHEUS.name] == [f"localhost:{PROMETHEUS.ports['http']}"]
    assert scrape_targets() == {name: targets[0] for name, targets in scraped.items()}


def test_rule_files_loads_exactly_the_shipped_rules() -> None:
    assert _config()["rule_files"] == [RULE_FILES]
    pattern = RULE_FILES.removeprefix("rules/")
    shipped = sorted(RULES.glob(pattern))
    assert shipped == sorted(RULES.glob("*.yml"))
    assert len(shipped) >= 2


def test_promtool_accepts_the_rendered_config_and_the_rules_it_loads(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed: scripts/setup installs Debian's prometheus as root")
    # The layout of the image: the rules beside the file, as compose mounts them.
    (tmp_path / "prometheus.yml").write_text(render())
    (tmp_path / "rules").symlink_to(RULES)
    done = subprocess.run(
        [promtool, "check", "config", "prometheus.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert f"SUCCESS: {len(list(RULES.glob('*.rules.yml')))} rule files found" in output


def test_compose_mounts_the_rules_where_the_config_looks_and_publishes_on_loopback() -> None:
    service = yaml.safe_load(render_compose())["services"][PROMETHEUS.name]
    assert f"./services/prometheus/rules:{CONFIG_DIR}/rules:ro" in service["volumes"]
    assert "prometheus-data:/prometheus" in service["volumes"]
    assert service["ports"] == [
        "${EVALMESH_METRICS_BIND:-127.0.0.1}:${EVALMESH_PROMETHEUS_PORT:-9090}:9090"
    ]
    # It scrapes the mesh; the second network is only there so its port can be published.
    assert "mesh" in service["networks"]
    assert "depends_on" not in service  # a service that is down is what it is there to report


def test_the_image_renders_this_config_and_serves_where_the_catalog_says() -> None:
    dockerfile = (ROOT / "services" / "prometheus" / "Dockerfile").read_text()
    assert "python -m evalmesh_deploy.prometheus >/tmp/prometheus.yml" in dockerfile
    assert f"--config.file={CONFIG_DIR}/prometheus.yml" in dockerfile
    assert f"--web.listen-address=0.0.0.0:{PROMETHEUS.ports['http']}" in dockerfile
    assert f"127.0.0.1:{PROMETHEUS.ports['http']}/-/ready" in dockerfile
