"""The evalmesh benchmark suite: ``scripts/bench`` (``python -m benchmarks``).

Every scenario measures evalmesh side by side with a reference in the same run (the raw bwrap
floor, the sandbox library alone, an empty database, one watcher...), in interleaved rounds,
and reports medians and ratios. The report goes to ``docs/benchmarks.md`` with PNG charts.
"""
