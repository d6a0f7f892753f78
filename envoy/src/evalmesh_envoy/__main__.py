"""Render the edge configuration to a YAML file that ``envoy -c`` accepts."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from evalmesh_envoy.config import EdgeSettings, render_yaml


def _host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="evalmesh-envoy-config", description=__doc__)
    parser.add_argument("--listen", type=_host_port, required=True, help="edge HOST:PORT")
    parser.add_argument("--gateway", type=_host_port, required=True, help="gateway HOST:PORT")
    parser.add_argument(
        "--admin", type=_host_port, default=("127.0.0.1", 0), help="admin HOST:PORT (loopback)"
    )
    parser.add_argument("--origin", action="append", default=[], help="allowed browser origin")
    parser.add_argument("--out", type=Path, required=True, help="file to write the YAML to")
    return parser.parse_args(argv)


def _write_atomically(path: Path, text: str) -> None:
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(temp, path)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, build the edge configuration and write it."""
    args = _parse(sys.argv[1:] if argv is None else argv)
    settings = EdgeSettings(
        listen_host=args.listen[0],
        listen_port=args.listen[1],
        gateway_host=args.gateway[0],
        gateway_port=args.gateway[1],
        admin_host=args.admin[0],
        admin_port=args.admin[1],
        allowed_origins=tuple(args.origin),
    )
    _write_atomically(args.out, render_yaml(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
