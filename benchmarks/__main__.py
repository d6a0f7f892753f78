"""``python -m benchmarks``: run the benchmark suite and write the report."""

from benchmarks.cli import main

raise SystemExit(main())
