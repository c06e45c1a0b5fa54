"""Benchmark 1: signed Twilio webhooks through the real server, against a bare
aiohttp handler, each server in its own process and the load generator in this
one (all three share the machine's cores).

Gather callbacks: every live call holds one open gather; a request carries the
call's current turn token, the echo flow answers with say + gather carrying
the next token, and the generator reads that token from the reply (as Twilio
follows the document), so each call takes one turn at a time and every
request is a fresh, valid turn.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import PYTHON, ROOT, Row, median, percentile
from bench.loadgen import Requests, Result, closed_loop, open_loop

SATURATION_CONCURRENCY = 8      # the server's default per-IP in-flight cap: one carrier IP at its limit


@contextmanager
def server(*args: str) -> Iterator[dict[str, Any]]:
    proc = subprocess.Popen([PYTHON, "-m", "bench.servers", *args], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"bench server {' '.join(args)} exited before it was ready")
        info = json.loads(line)
        info["pid"] = proc.pid
        yield info
        proc.stdin.close()
        tail = proc.stdout.readline()
        info["counters"] = json.loads(tail) if tail else {}
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measure(reqs: Requests, mode: str, duration: float, pid: int | None = None) -> Result:
    """One load run; with ``pid``, also the server's CPU time per request (less
    sensitive than wall time to whatever else runs on the machine)."""
    before = cpu_seconds(pid) if pid else 0.0
    if mode == "sat":
        res = asyncio.run(closed_loop(reqs, SATURATION_CONCURRENCY, duration))
    else:
        res = asyncio.run(open_loop(reqs, float(mode), duration))
    if pid and res.latencies_ms:
        res.cpu_us = (cpu_seconds(pid) - before) / len(res.latencies_ms) * 1e6
    return res


def _row(bench: str, case: str, res: Result, base: Result | None, mode: str, target: str) -> Row:
    ratio_of = "rps" if mode == "sat" else "median"
    baseline = None
    if base is not None:
        baseline = base.rps if mode == "sat" else median(base.latencies_ms)
    note = [f"n={len(res.latencies_ms)}"]
    if res.cpu_us:
        note.append(f"server CPU {res.cpu_us:.0f} µs/req")
    if res.errors:
        note.append("non-200: " + ", ".join(f"{k}×{v}" for k, v in sorted(res.statuses.items()) if k != 200))
    if res.late_ms > 5:
        note.append(f"generator lag ≤{res.late_ms:.0f} ms")
    return Row(bench, case, "ms", median(res.latencies_ms), percentile(res.latencies_ms, 99), res.rps,
               baseline, ratio_of, target, "; ".join(note))


def run(*, quick: bool = False, calls: int = 300, duration: float = 5.0) -> list[Row]:
    modes = ["sat"] if quick else ["100", "500", "sat"]
    duration = 0.3 if quick else duration
    calls = 4 if quick else calls
    shapes = ["status", "gather"]
    base: dict[tuple[str, str], Result] = {}
    with server("baseline") as info:
        for shape in shapes:
            reqs = Requests(info["url"], [], shape, fixed=True)
            _measure(reqs, "sat", 0.1 if quick else 1.0)          # warm-up
            for mode in modes:
                base[shape, mode] = _measure(reqs, mode, duration, info["pid"])
    rows: list[Row] = []
    for shape in shapes:
        for mode in modes:
            res = base[shape, mode]
            rows.append(_row("1 webhooks", f"baseline {shape} @{mode}", res, None, mode, ""))
    with server("twilio", str(calls)) as info:
        for shape in shapes:
            reqs = Requests(info["url"], info["calls"], shape)
            _measure(reqs, "sat", 0.1 if quick else 1.0)          # warm-up
            for mode in modes:
                target = {"sat": "≥ 0.60× baseline req/s", "500": "p99 < 5 ms"}.get(mode, "")
                res = _measure(reqs, mode, duration, info["pid"])
                rows.append(_row("1 webhooks", f"voicecall {shape} @{mode}", res, base[shape, mode], mode, target))
        reqs = Requests(info["url"], info["calls"], "replay")
        rows.append(_row("1 webhooks", "voicecall replayed status @sat", _measure(reqs, "sat", duration, info["pid"]),
                         base["status", "sat"], "sat", "200, no side effect"))
    counters = info.get("counters", {})
    if counters and rows:
        rows[-1].note += f"; server counters {counters}"
    return rows
