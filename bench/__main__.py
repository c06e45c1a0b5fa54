"""``python -m bench`` (``make bench``): every benchmark on this machine, each
beside its baseline in the same run; prints the table and writes
``bench/results.md``.

    python -m bench                 # everything (about 3-4 minutes on 2 cores)
    python -m bench --only render   # one or more of: webhooks render capacity turns startup
    python -m bench --quick         # a few iterations of each: checks the benchmarks run
    python -m bench --calls 2000    # fewer live calls for the capacity run
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bench.common import ROOT, Row, machine, table

NAMES = ("webhooks", "render", "capacity", "turns", "startup")


def _runner(name: str, quick: bool, calls: int) -> Callable[[], list[Row]]:
    if name == "webhooks":
        from bench import webhooks
        return lambda: webhooks.run(quick=quick)
    if name == "render":
        from bench import render
        return lambda: render.run(quick=quick)
    if name == "capacity":
        from bench import capacity
        return lambda: capacity.run(quick=quick, calls=calls)
    if name == "turns":
        from bench import turns
        return lambda: turns.run(quick=quick)
    from bench import startup
    return lambda: startup.run(quick=quick)


def report(rows: list[Row], seconds: float) -> str:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join([
        f"Measured {stamp} on {machine()}.",
        "Load generator, servers and carrier emulators share these cores (one server process each).",
        "",
        table(rows),
        "",
        f"({seconds:.0f} s for the whole run; `make bench` reproduces it.)",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=NAMES, help="run only these benchmarks")
    parser.add_argument("--quick", action="store_true", help="a few iterations each (smoke run)")
    parser.add_argument("--calls", type=int, default=10_000, help="live calls for the capacity run")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results.md",
                        help="where to write the Markdown table (default bench/results.md)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    rows: list[Row] = []
    started = time.perf_counter()
    for name in args.only or NAMES:
        print(f"== {name} …", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        rows.extend(_runner(name, args.quick, args.calls)())
        print(f"   {name} done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    text = report(rows, time.perf_counter() - started)
    print(text)
    if not args.no_write and not args.quick:
        args.output.write_text("# Benchmark results\n\n" + text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
