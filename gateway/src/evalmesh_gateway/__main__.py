"""``python -m evalmesh_gateway``: run the gateway with settings from the environment."""

from evalmesh_common.server import run
from evalmesh_gateway.app import build_app
from evalmesh_gateway.config import GatewayConfig

if __name__ == "__main__":
    run("gateway", GatewayConfig, build_app)
