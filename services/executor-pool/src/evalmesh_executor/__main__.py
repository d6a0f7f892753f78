"""``python -m evalmesh_executor``: run one executor-pool instance."""

from evalmesh_common import run
from evalmesh_executor.app import build_app
from evalmesh_executor.config import ExecutorConfig

if __name__ == "__main__":
    run("executor-pool", ExecutorConfig, build_app)
