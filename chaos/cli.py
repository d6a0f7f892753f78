"""``scripts/chaos [--quick] [--cycles N] [--faults a,b]``: run a campaign, write the report."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from chaos.disk import private_mounts
from chaos.hostwatch import become_subreaper
from chaos.plan import FAULTS, FULL, QUICK, Plan

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/chaos",
        description="Run evalmesh's chaos campaign and write docs/reliability.md.",
    )
    parser.add_argument("--quick", action="store_true", help="one cycle, shorter holds (CI)")
    parser.add_argument("--cycles", type=int, help="cycles of every fault (default: 3, quick 1)")
    parser.add_argument(
        "--faults",
        default=",".join(FAULTS),
        help=f"comma-separated faults, in order (default: all: {','.join(FAULTS)})",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "docs", help="report folder (default: docs)"
    )
    parser.add_argument("--no-report", action="store_true", help="write no Markdown report")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the mesh's state and logs")
    args = parser.parse_args(argv)
    unknown = [f for f in args.faults.split(",") if f and f not in FAULTS]
    if unknown:
        parser.error(f"unknown fault {unknown[0]!r}: choose from {', '.join(FAULTS)}")
    return args


def _plan(args: argparse.Namespace) -> Plan:
    plan = QUICK if args.quick else FULL
    faults = tuple(f for f in args.faults.split(",") if f)
    return dataclasses.replace(plan, cycles=args.cycles or plan.cycles, faults=faults)


def _command(args: argparse.Namespace) -> str:
    words = ["scripts/chaos"] + (["--quick"] if args.quick else [])
    if args.cycles:
        words += ["--cycles", str(args.cycles)]
    if args.faults != ",".join(FAULTS):
        words += ["--faults", args.faults]
    if args.seed:
        words += ["--seed", str(args.seed)]
    return shlex.join(words)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one campaign; 0 if the checker found nothing and its negative control failed as it
    must, 1 otherwise."""
    # Both before any thread starts: the kernel refuses a new mount namespace to a process
    # with threads, and orphans must find the campaign as their reaper from the first kill.
    disk_problem = private_mounts() if os.geteuid() == 0 else "not root: no tmpfs to fill"
    if not become_subreaper():
        print("chaos: cannot become a child subreaper; orphans go unseen", file=sys.stderr)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("evalmesh", "evalmesh_deploy", "grpc", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = _parse(sys.argv[1:] if argv is None else argv)
    work_dir = Path(tempfile.mkdtemp(prefix="evalmesh-chaos-"))
    # Imported late: the campaign's modules start threads (gRPC) when imported.
    from chaos.campaign import run_campaign
    from chaos.report import summary, write_json, write_report

    load_before = os.getloadavg()[0]
    try:
        outcome = asyncio.run(
            run_campaign(_plan(args), work_dir, disk_problem, args.seed, args.keep)
        )
    finally:
        if args.keep:
            print(f"chaos: state and logs kept in {work_dir}", file=sys.stderr)
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    load = f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    if not args.no_report:
        from benchmarks.machine import describe_machine  # the benchmark report's description

        report = args.out / "reliability.md"
        write_report(report, outcome, describe_machine(load), _command(args))
        print(f"chaos: wrote {report}", file=sys.stderr)
    if args.json:
        write_json(args.json, outcome)
    figures = summary(outcome)
    print(f"chaos: {figures['counts']}, negative control passed: {outcome.control.passed}")
    return 0 if outcome.verdict.clean and outcome.control.passed else 1
