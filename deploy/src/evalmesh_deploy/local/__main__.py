"""``python -m evalmesh_deploy.local up``: start the mesh, print how to use it, keep it running (a
component that exits is restarted with backoff, see ``supervisor``), stop it all on Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import threading
from pathlib import Path
from types import FrameType

from evalmesh_deploy.local.bootstrap import create_admin_key
from evalmesh_deploy.local.mesh import LocalMesh, MeshEndpoints
from evalmesh_deploy.local.processes import StartupError
from evalmesh_deploy.local.supervisor import Supervisor

PREFERRED_EDGE_PORT = 8080


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m evalmesh_deploy.local", description=__doc__)
    parser.add_argument("command", choices=["up"], help="start the mesh in the foreground")
    parser.add_argument("--state-dir", type=Path, default=Path(".evalmesh"), help="data and logs")
    parser.add_argument("--edge-port", type=int, default=None, help="edge port (default 8080)")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds to become healthy")
    parser.add_argument(
        "--tls",
        action="store_true",
        help="HTTPS at the edge and a TLS gateway port, with a local CA made in STATE_DIR/tls",
    )
    return parser.parse_args(argv)


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _banner(endpoints: MeshEndpoints, state_file: Path) -> str:
    key = endpoints.admin_api_key or "<no key: storage could not create one>"
    gateway = endpoints.services["gateway"]
    create = (
        f"grpcurl -plaintext -H 'authorization: Bearer {key}' "
        """-d '{"request_id": "hello-1", "spec": {"code": "print(\\"hello\\")"}}' """
        f"{gateway} evalmesh.v1.EvaluationService/CreateEvaluation"
    )
    return "\n".join(
        [
            "evalmesh is up.",
            f"  URL (browser, gRPC-web): {endpoints.url}",
            f"  gRPC (gateway):          {gateway}",
            f"  admin API key:           {key}",
            f"  state file:              {state_file}",
            *_tls_lines(endpoints, key),
            *_metrics_lines(endpoints),
            "",
            "Try:",
            f"  grpcurl -plaintext {gateway} list",
            f"  {create}",
            "",
            "A component that exits is restarted. Press Ctrl-C to stop everything.",
        ]
    )


def _tls_lines(endpoints: MeshEndpoints, key: str) -> list[str]:
    if not endpoints.gateway_tls:
        return []
    ca, gateway = endpoints.ca_file, endpoints.gateway_tls
    return [
        f"  gRPC over TLS:           {gateway} (trust {ca})",
        f"  evalmesh --address {gateway} --root-certificates {ca} --api-key {key} "
        "run -c 'print(1)'",
    ]


def _metrics_lines(endpoints: MeshEndpoints) -> list[str]:
    if not endpoints.metrics:
        return []
    return [
        "  Prometheus metrics:",
        *(f"    {name + ':':<22} {url}" for name, url in endpoints.metrics.items()),
    ]


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, handler)


def _report(line: str) -> None:
    print(f"evalmesh: {line}", file=sys.stderr, flush=True)


def up(args: argparse.Namespace) -> int:
    """Start the mesh, print the banner, and run it until a signal (restarting a component that
    exits), or until a component keeps crashing."""
    stop = threading.Event()
    _stop_on_signals(stop)
    port = args.edge_port
    if port is None:
        port = PREFERRED_EDGE_PORT if _free(PREFERRED_EDGE_PORT) else 0
    mesh = LocalMesh(
        args.state_dir.resolve(), edge_port=port, bootstrap_key=create_admin_key, tls=args.tls
    )
    failures: list[str] = []

    def give_up(message: str) -> None:
        failures.append(message)
        stop.set()

    supervisor = Supervisor(mesh, _report, on_give_up=give_up)
    try:
        endpoints = mesh.start(timeout=args.timeout)
        print(_banner(endpoints, mesh.state_file), flush=True)
        supervisor.start()
        stop.wait()
    except StartupError as error:
        print(f"evalmesh could not start: {error}", file=sys.stderr)
        return 1
    finally:
        print("stopping evalmesh...", file=sys.stderr, flush=True)
        supervisor.stop()
        mesh.stop()
    for message in failures:
        print(f"evalmesh stopped because {message}", file=sys.stderr)
    print("evalmesh stopped; nothing left running.", file=sys.stderr)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m evalmesh_deploy.local``."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = _parse(sys.argv[1:] if argv is None else argv)
    return up(args)


if __name__ == "__main__":
    raise SystemExit(main())
