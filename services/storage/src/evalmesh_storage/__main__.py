"""``python -m evalmesh_storage``: read the environment, migrate, serve until SIGTERM."""

from __future__ import annotations

from typing import NoReturn

from evalmesh_common.server.runner import run
from evalmesh_storage.app import build_app
from evalmesh_storage.config import StorageConfig


def main() -> NoReturn:
    """Run the storage service; the exit code says how it ended."""
    run("storage", StorageConfig, build_app)


if __name__ == "__main__":
    main()
