"""Shared pieces of the benchmarks: percentiles, result rows, the table, the machine.

Benchmarks report numbers; nothing here decides pass or fail except the
``target`` text each row carries, which the table prints beside the result so
a reader sees both (tests never assert timings).
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


@dataclass
class Row:
    """One line of the table. ``unit`` names what median/p99 measure."""

    bench: str
    case: str
    unit: str
    median: float
    p99: float | None = None
    rps: float | None = None
    baseline: float | None = None      # the baseline's figure comparable to ``ratio_of``
    ratio_of: str = "median"           # "median" or "rps": which figure the ratio compares
    target: str = ""
    note: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        ours = self.rps if self.ratio_of == "rps" else self.median
        if self.baseline in (None, 0) or ours is None:
            return None
        return ours / self.baseline


def _num(value: float | None, digits: int = 2) -> str:
    if value is None or value != value:   # None or NaN
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def table(rows: Sequence[Row]) -> str:
    """A Markdown table (also readable as plain text)."""
    head = "| benchmark | case | median | p99 | req/s | ratio to baseline | target | note |"
    lines = [head, "|---|---|---:|---:|---:|---:|---|---|"]
    for r in rows:
        ratio = r.ratio
        ratio_text = "–" if ratio is None else f"{ratio:.2f}× ({r.ratio_of})"
        lines.append(f"| {r.bench} | {r.case} | {_num(r.median)} {r.unit} | "
                     f"{_num(r.p99)}{' ' + r.unit if r.p99 is not None else ''} | {_num(r.rps, 0)} | "
                     f"{ratio_text} | {r.target} | {r.note} |")
    return "\n".join(lines)


def machine() -> str:
    """nproc, CPU model, memory, Python: what the numbers were measured on."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f", {int(line.split()[1]) // 1024} MiB RAM"
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} CPU(s) (nproc), {model}{mem}, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")


def rss_bytes() -> int:
    """This process's resident set size, from /proc/self/statm."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")
