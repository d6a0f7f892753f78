"""``python -m evalmesh_deploy``: the one-shot steps of docker-compose.yml (see compose_steps)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from evalmesh_deploy.certs import DEFAULT_NAMES
from evalmesh_deploy.compose_steps import ADMIN_KEY_FILE, bootstrap, setup, show


def _names(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m evalmesh_deploy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    step = sub.add_parser("setup", help="fill the secret volumes (TLS, database, storage)")
    step.add_argument("--secrets", type=Path, default=Path("/secrets"))
    step.add_argument("--input", type=Path, default=Path("/input"))
    step.add_argument(
        "--names", type=_names, default=[], help="extra names for the certificate, comma-separated"
    )
    step.add_argument("--db-user", default="evalmesh")
    step.add_argument("--db-name", default="evalmesh")
    step = sub.add_parser("bootstrap", help="create the first admin API key")
    step.add_argument("--storage", default="storage:50053")
    step.add_argument("--admin", type=Path, default=Path("/secrets/admin"))
    step = sub.add_parser("show-admin-key", help="print the first admin API key")
    step.add_argument("--admin", type=Path, default=Path("/secrets/admin"))
    step = sub.add_parser("show-ca", help="print the CA certificate clients should trust")
    step.add_argument("--secrets", type=Path, default=Path("/secrets"))
    return parser.parse_args(argv)


# The names every installation's certificate carries: loopback, and the compose services that
# serve TLS, so health checks and other containers can verify it too.
BUILT_IN_NAMES = (*DEFAULT_NAMES, "edge", "gateway")


def main(argv: list[str] | None = None) -> int:
    """Run one step."""
    args = _parse(sys.argv[1:] if argv is None else argv)
    if args.command == "setup":
        names = [*args.names, *BUILT_IN_NAMES]
        setup(args.secrets, args.input, names, args.db_user, args.db_name)
    elif args.command == "bootstrap":
        bootstrap(args.storage, args.admin)
    elif args.command == "show-admin-key":
        return show(args.admin / ADMIN_KEY_FILE)
    else:
        return show(args.secrets / "tls" / "ca.crt")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
