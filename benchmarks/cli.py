"""``scripts/bench [SCENARIO...] [--quick]``: run scenarios, then write the report."""

from __future__ import annotations

import argparse
import logging
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from benchmarks.context import FULL, QUICK, Context
from benchmarks.machine import describe_machine, load_average
from benchmarks.report import write_report
from benchmarks.results import ScenarioResult
from benchmarks.scenarios import SCENARIOS

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench", description="Run evalmesh's benchmarks and write the report."
    )
    parser.add_argument(
        "scenarios", nargs="*", metavar="SCENARIO", help="scenarios to run (default: all)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke size: a few jobs each")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "docs", help="report folder (default: docs)"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=ROOT / ".evalmesh" / "bench-cache",
        help="prepared databases kept between runs (default: .evalmesh/bench-cache)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the meshes' state and logs")
    args = parser.parse_args(argv)
    unknown = [name for name in args.scenarios if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}: choose from {', '.join(SCENARIOS)}")
    return args


def _command(args: argparse.Namespace) -> str:
    """The command that reproduces this run (folders given by path are left out)."""
    words = ["scripts/bench", *args.scenarios] + (["--quick"] if args.quick else [])
    return shlex.join(words)


def _run_one(name: str, ctx: Context) -> ScenarioResult:
    title, scenario = SCENARIOS[name]
    print(f"bench: {name} ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        result = scenario(ctx)
    except Exception as error:
        traceback.print_exc()
        result = ScenarioResult(name, title, failed=_first_line(error))
    result.seconds = time.monotonic() - started
    state = "skipped" if result.skipped else "FAILED" if result.failed else "done"
    print(f"bench: {name} {state} in {result.seconds:.0f} s", file=sys.stderr, flush=True)
    return result


def _first_line(error: Exception) -> str:
    """The error's kind and first line (the traceback and logs went to stderr): the report is
    committed, so it gets no paths or log dumps."""
    line = (str(error).strip().splitlines() or [""])[0]
    line = line.replace(str(ROOT), ".").replace(tempfile.gettempdir(), "TMP")
    return f"{type(error).__name__}: {line[:200]} (details on the run's stderr)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen scenarios and write the report; 1 if any scenario failed."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = _parse(sys.argv[1:] if argv is None else argv)
    if args.list:
        for name, (title, _) in SCENARIOS.items():
            print(f"{name:12} {title}")
        return 0
    work_dir = Path(tempfile.mkdtemp(prefix="evalmesh-bench-"))
    report = args.out / "benchmarks.md"
    ctx = Context(
        sizes=QUICK if args.quick else FULL,
        quick=args.quick,
        work_dir=work_dir,
        cache_dir=args.cache_dir,
        charts_dir=args.out / "benchmarks",
    )
    started, load_before = time.monotonic(), load_average()
    try:
        results = [_run_one(name, ctx) for name in args.scenarios or list(SCENARIOS)]
    finally:
        if args.keep:
            print(f"bench: state and logs kept in {work_dir}", file=sys.stderr)
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    minutes = (time.monotonic() - started) / 60
    load = f"{load_before:.1f} at the start, {load_average():.1f} at the end"
    machine = describe_machine(load)
    write_report(report, ctx.charts_dir, results, machine, _command(args), minutes)
    print(f"bench: wrote {report} in {minutes:.1f} minutes", file=sys.stderr)
    return 1 if any(result.failed for result in results) else 0
