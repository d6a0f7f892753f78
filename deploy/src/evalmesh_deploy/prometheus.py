"""prometheus.yml for the Prometheus of docker-compose.yml, rendered from the catalog:
``python -m evalmesh_deploy.prometheus``.

Every component with a ``metrics`` port is a scrape target, reached by its compose service name
on that port, so a service added to the catalog is scraped without a second list to keep up.
The evalmesh/prometheus image renders this file from the evalmesh-deploy wheel of its own build
(scripts/images), and compose mounts services/prometheus/rules beside it, where ``rule_files``
looks. deploy/tests/test_prometheus_config.py holds the targets to the catalog and runs
``promtool check config`` on the result, rules included.
"""

from __future__ import annotations

import sys
from typing import Any

from evalmesh_deploy.catalog import COMPONENTS, PROMETHEUS
from evalmesh_deploy.yamltext import block_yaml

__all__ = ["CONFIG_DIR", "RULE_FILES", "SCRAPE_INTERVAL", "render", "scrape_targets"]

# Where the image keeps the configuration; relative paths in it (RULE_FILES) resolve from here.
CONFIG_DIR = "/etc/prometheus"
# The shipped rules (services/prometheus/rules), which compose mounts at CONFIG_DIR/rules.
RULE_FILES = "rules/*.rules.yml"
# Prometheus' default: the rules' windows (rates over 5m, increase over 15m) assume no slower.
SCRAPE_INTERVAL = "15s"

HEADER = """\
# Prometheus for evalmesh under docker-compose.yml: every component's metrics port, and the rules
# of services/prometheus/rules. Generated from the catalog of services
# (deploy/src/evalmesh_deploy/catalog.py) by `python -m evalmesh_deploy.prometheus` when
# scripts/images builds evalmesh/prometheus; change the catalog, not this file.
"""


def scrape_targets() -> dict[str, str]:
    """Each scrape job (named after its component) and the address it scrapes: the compose
    service name and metrics port of every component that has one, then Prometheus itself."""
    targets = {
        component.name: f"{component.name}:{component.ports['metrics']}"
        for component in COMPONENTS.values()
        if "metrics" in component.ports
    }
    targets[PROMETHEUS.name] = PROMETHEUS.endpoint("localhost")
    return targets


def _job(name: str, target: str) -> dict[str, Any]:
    return {"job_name": name, "static_configs": [{"targets": [target]}]}


def render() -> str:
    """The whole prometheus.yml."""
    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [RULE_FILES],
        "scrape_configs": [_job(name, target) for name, target in scrape_targets().items()],
    }
    return HEADER + block_yaml(config)


def main() -> int:
    """Write prometheus.yml to standard output."""
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
