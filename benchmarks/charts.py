"""PNG charts for the report, drawn with matplotlib's file-only backend."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = ["bar_chart", "cdf_chart", "completion_chart", "grouped_bars"]

_SIZE = (7.0, 3.8)


def bar_chart(
    path: Path,
    bars: Mapping[str, Sequence[float]],
    *,
    title: str,
    ylabel: str,
    labels: Mapping[str, str] | None = None,
    target: tuple[float, str] | None = None,
) -> None:
    """One bar per key at the median of its values, with each value as a dot (the rounds),
    a text label on top (e.g. the ratio) and an optional dashed target line."""
    fig, ax = plt.subplots(figsize=_SIZE)
    names = list(bars)
    medians = [_median(bars[name]) for name in names]
    ax.bar(range(len(names)), medians, color="#4c72b0", alpha=0.85)
    for i, name in enumerate(names):
        ax.scatter([i] * len(bars[name]), bars[name], color="black", s=10, zorder=3)
        text = (labels or {}).get(name, "")
        if text and not math.isnan(medians[i]):
            ax.annotate(
                text,
                (i, medians[i]),
                ha="center",
                va="bottom",
                fontsize=9,
                xytext=(0, 3),
                textcoords="offset points",
            )
    if target is not None:
        ax.axhline(target[0], color="#c44e52", linestyle="--", linewidth=1, label=target[1])
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xticks(range(len(names)), [_wrap(n) for n in names], fontsize=8)
    _finish(fig, ax, path, title, ylabel)


def grouped_bars(
    path: Path,
    groups: Mapping[str, Mapping[str, float]],
    *,
    title: str,
    ylabel: str,
) -> None:
    """Bars grouped by the outer key (e.g. the stage), one colour per inner key."""
    fig, ax = plt.subplots(figsize=_SIZE)
    names = list(groups)
    series = list(dict.fromkeys(k for inner in groups.values() for k in inner))
    width = 0.8 / max(1, len(series))
    for j, label in enumerate(series):
        values = [groups[name].get(label, math.nan) for name in names]
        positions = [i + (j - (len(series) - 1) / 2) * width for i in range(len(names))]
        ax.bar(positions, values, width, label=label)
    ax.set_xticks(range(len(names)), [_wrap(n) for n in names], fontsize=8)
    ax.legend(fontsize=8)
    _finish(fig, ax, path, title, ylabel)


def cdf_chart(
    path: Path,
    series: Mapping[str, Sequence[float]],
    *,
    title: str,
    xlabel: str,
    ylabel: str = "fraction of runs",
) -> None:
    """The empirical distribution of each series (x: value, y: fraction at or below)."""
    fig, ax = plt.subplots(figsize=_SIZE)
    for label, values in series.items():
        ordered = sorted(values)
        if ordered:
            fractions = [(i + 1) / len(ordered) for i in range(len(ordered))]
            ax.step(ordered, fractions, where="post", label=label)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.legend(fontsize=8)
    _finish(fig, ax, path, title, ylabel)


def completion_chart(
    path: Path,
    series: Mapping[str, Sequence[float]],
    *,
    title: str,
    ideal: Sequence[tuple[float, int]],
) -> None:
    """Jobs finished over time per series, against the ideal (time, jobs done) steps."""
    fig, ax = plt.subplots(figsize=_SIZE)
    for label, ends in series.items():
        ordered = sorted(ends)
        ax.step(ordered, range(1, len(ordered) + 1), where="post", label=label)
    times = [0.0, *(t for t, _ in ideal)]
    done = [0, *(n for _, n in ideal)]
    ax.step(times, done, where="post", color="grey", linestyle="--", linewidth=1, label="ideal")
    ax.set_xlabel("seconds after the first submit")
    ax.legend(fontsize=8)
    _finish(fig, ax, path, title, "jobs finished")


def _finish(fig: Figure, ax: Axes, path: Path, title: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _median(values: Sequence[float]) -> float:
    ordered = sorted(v for v in values if not math.isnan(v))
    if not ordered:
        return math.nan
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _wrap(label: str, width: int = 16) -> str:
    words, lines, line = label.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join([*lines, line])
