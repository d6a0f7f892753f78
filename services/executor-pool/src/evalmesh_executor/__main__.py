"""``python -m evalmesh_executor``: run one executor-pool instance."""

import os

# Set before grpc is imported. The executor starts processes all the time (a sandbox per job,
# probes); whenever Python has to fork() rather than vfork(), gRPC's fork handlers run, and
# under grpc.aio they have aborted children between fork and exec ("wakeup_fd_->Wakeup().ok()").
# No child of the executor uses gRPC, so they are off unless the operator says otherwise.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from evalmesh_common.server import run
from evalmesh_executor.app import build_app
from evalmesh_executor.config import ExecutorConfig

if __name__ == "__main__":
    run("executor-pool", ExecutorConfig, build_app)
