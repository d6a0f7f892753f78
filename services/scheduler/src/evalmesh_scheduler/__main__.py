"""``python -m evalmesh_scheduler``: run the scheduler with settings from the environment."""

from evalmesh_common.server import run
from evalmesh_scheduler.app import build_app
from evalmesh_scheduler.config import SchedulerConfig

if __name__ == "__main__":
    run("scheduler", SchedulerConfig, build_app)
