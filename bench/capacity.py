"""Benchmark 3: call capacity. N concurrent live calls held by one runtime on
the mock carrier: memory per call, time to place them, webhook latency while
they are live, time to restore them all in a fresh process after a restart.

Three processes, so each number belongs to one side: the mock carrier (its
own process: the far end's memory is not ours), the runtime (RSS measured
from /proc/self/statm before and after the calls), and this one, which
orchestrates and generates load. Every callee answers at once and stays
silent at a one-hour gather (``bench_echo`` flow), so no call ends while the
benchmark runs.
"""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import PYTHON, ROOT, Row, rss_bytes
from bench.loadgen import Result, open_loop
from bench.webhooks import _row

WARM_CALLS = 100       # placed before the first RSS reading: code paths, caches, pools warmed


def _settings(store: str, **extra: Any) -> Any:
    from voicecall.engine.config import default_settings

    return default_settings().replace(
        provider="mock", store=store, serve={"port": 0, "bind": "127.0.0.1"}, maxConcurrentCalls=100_000,
        maxDurationSeconds=14000, flows={"paths": [str(ROOT / "bench" / "flows")]}, **extra)


def _emit(info: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(info) + "\n")
    sys.stdout.flush()


async def _carrier(store: str) -> None:
    from voicecall.engine.clock import RealClock
    from voicecall.engine.security import load_or_create_mock_secret
    from voicecall.providers.callee import Callee
    from voicecall.providers.mock import MockCarrier

    carrier = MockCarrier(secret=load_or_create_mock_secret(Path(store)), clock=RealClock(),
                          default_callee=Callee.from_script([{"answer": {"after": 0}}]))
    _emit({"url": await carrier.start()})
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await carrier.stop()


async def _place(runtime: Any, n: int, offset: int, batch: int = 200) -> list[str]:
    ids: list[str] = []
    for start in range(0, n, batch):
        ids.extend(await asyncio.gather(*(
            runtime.initiate(to=f"+1555{offset + i:07d}", message="Hi", flow="bench_echo")
            for i in range(start, min(n, start + batch)))))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if all(runtime.sessions[c].record.state == "listening" and not runtime.sessions[c].outbox
               for c in ids if c in runtime.sessions):
            break
        await asyncio.sleep(0.1)
    return ids


async def _runtime(store: str, carrier_url: str, n: int) -> None:
    from voicecall.engine.runtime import VoiceCallRuntime

    runtime = VoiceCallRuntime(_settings(store), provider_options={"api_base_url": carrier_url})
    await runtime.start()
    limiter = runtime._webhook.limiter
    cap, limiter.per_ip = limiter.per_ip, 100_000        # the carrier's set-up burst; measured traffic is capped
    await _place(runtime, WARM_CALLS, 0)
    gc.collect()
    rss0 = rss_bytes()
    t0 = time.perf_counter()
    ids = await _place(runtime, n, WARM_CALLS)
    placed_s = time.perf_counter() - t0
    gc.collect()
    rss1 = rss_bytes()
    limiter.per_ip = cap
    # A full collection walks every tracked object: this is the pause a gen-2
    # GC inflicts on in-flight webhooks. gc.freeze() (what the runtime could do
    # once started) takes the long-lived heap out of it; unfrozen again after,
    # so the latency rows below measure the runtime as it is.
    t0 = time.perf_counter()
    gc.collect()
    gc_ms = (time.perf_counter() - t0) * 1000
    gc.freeze()
    t0 = time.perf_counter()
    gc.collect()
    frozen_gc_ms = (time.perf_counter() - t0) * 1000
    gc.unfreeze()
    live = [c for c in ids if c in runtime.sessions]
    listening = sum(runtime.sessions[c].record.state == "listening" for c in live)
    calls = [{"callId": c, "sid": runtime.sessions[c].record.provider_call_id,
              "url": runtime.urls_for(c).webhook("status")} for c in live[:1000]]
    _emit({"url": runtime.public_url, "calls": calls, "placed_s": placed_s, "rss_delta": rss1 - rss0,
           "live": len(runtime.sessions), "listening": listening,
           "gc_ms": gc_ms, "frozen_gc_ms": frozen_gc_ms, "objects": len(gc.get_objects()),
           "secret": str(Path(store) / "mock.secret")})
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    t0 = time.perf_counter()
    await runtime.stop()
    _emit({"stop_s": time.perf_counter() - t0})


async def _restore(store: str, carrier_url: str) -> None:
    from voicecall.engine.runtime import VoiceCallRuntime

    runtime = VoiceCallRuntime(_settings(store), provider_options={"api_base_url": carrier_url})
    # Everything a start needs that is not the calls (imports, flows) is loaded first.
    _ = runtime.flows.get("bench_echo")
    import voicecall.engine.server
    import voicecall.providers.mock  # noqa: F401
    gc.collect()
    rss0 = rss_bytes()
    t0 = time.perf_counter()
    await runtime.start()
    start_s = time.perf_counter() - t0
    gc.collect()
    _emit({"start_s": start_s, "restored": len(runtime.sessions), "rss_delta": rss_bytes() - rss0})
    await runtime.stop()


class MockStatus:
    """Signed mock-carrier ``answered`` callbacks for live calls (each with a new seq)."""

    def __init__(self, calls: list[dict[str, Any]], secret: bytes):
        self.calls, self.secret, self.seq = calls, secret, 10_000
        self.idle: list[Any] = []

    def take(self) -> tuple[tuple[str, bytes, dict[str, str]], None]:
        from voicecall.engine.security import mock_headers
        from voicecall.providers.mock.provider import dumps

        self.seq += 1
        call = self.calls[self.seq % len(self.calls)]
        body = dumps({"sid": call["sid"], "event": "answered", "seq": self.seq, "from": "+15550000000",
                      "to": "+15550001111", "direction": "outbound", "url": call["url"]})
        headers = {"Content-Type": "application/json", **mock_headers(self.secret, body, time.time())}
        return (call["url"], body, headers), None

    def give_back(self, call: None, body: str) -> bool:
        return True


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([PYTHON, "-m", "bench.capacity", *args], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def _read(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"capacity process {proc.args} exited early")
    return dict(json.loads(line))


def _close(proc: subprocess.Popen[str]) -> None:
    """Close stdin (the process's signal to finish), wait, kill if it hangs, close the pipes."""
    if proc.stdin is not None and not proc.stdin.closed:
        proc.stdin.close()
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def run(*, quick: bool = False, calls: int = 10_000) -> list[Row]:
    n = 10 if quick else calls
    rates = ["100"] if quick else ["100", "500"]
    duration = 0.3 if quick else 5.0
    with tempfile.TemporaryDirectory(prefix="voicecall-bench-cap-") as store:
        carrier = _spawn("carrier", store)
        try:
            carrier_url = _read(carrier)["url"]
            rt = _spawn("runtime", store, carrier_url, str(n))
            try:
                ready = _read(rt)
                gen = MockStatus(ready["calls"], bytes.fromhex(Path(ready["secret"]).read_text().strip()))
                loads: dict[str, Result] = {r: asyncio.run(open_loop(gen, float(r), duration))  # type: ignore[arg-type]
                                            for r in rates}
                assert rt.stdin is not None
                rt.stdin.close()
                stopped = _read(rt)
            finally:
                _close(rt)
            restore = subprocess.run([PYTHON, "-m", "bench.capacity", "restore", store, carrier_url], cwd=ROOT,
                                     capture_output=True, text=True, timeout=300)
            restored = json.loads(restore.stdout.splitlines()[0]) if restore.stdout else {}
        finally:
            _close(carrier)
    per_call = ready["rss_delta"] / max(1, ready["live"] - WARM_CALLS) / 1024
    live = ready["live"] - WARM_CALLS
    rows = [
        Row("3 capacity", f"memory per live call ({live:,} calls)", "KiB", per_call, target="< 20 KiB",
            note=f"runtime RSS delta {ready['rss_delta'] / 2**20:.1f} MiB; carrier in its own process; "
                 f"{ready['listening']:,} listening"),
        Row("3 capacity", f"place {n:,} calls", "s", ready["placed_s"],
            note=f"{n / ready['placed_s']:.0f} calls/s, 200 at a time, each answered and its gather delivered"),
        Row("3 capacity", f"restore {restored.get('restored', 0):,} calls in a fresh process", "s",
            restored.get("start_s", float("nan")), target="< 2 s",
            note=f"start() incl. store open and listener; RSS +{restored.get('rss_delta', 0) / 2**20:.1f} MiB "
                 f"= {restored.get('rss_delta', 0) / max(1, restored.get('restored', 1)) / 1024:.1f} KiB/call; "
                 f"stop() took {stopped['stop_s']:.2f} s"),
    ]
    rows.append(Row("3 capacity", f"full GC pause with {ready['live']:,} live calls", "ms", ready["gc_ms"],
                    note=f"{ready['objects']:,} tracked objects; {ready['frozen_gc_ms']:.1f} ms after gc.freeze()"))
    for rate, res in loads.items():
        row = _row("3 capacity", f"status webhook @{rate} with {ready['live']:,} live", res, None, rate, "")
        rows.append(row)
    return rows


def main(argv: list[str]) -> None:
    mode = argv[0] if argv else ""
    if mode == "carrier":
        asyncio.run(_carrier(argv[1]))
    elif mode == "runtime":
        asyncio.run(_runtime(argv[1], argv[2], int(argv[3])))
    elif mode == "restore":
        asyncio.run(_restore(argv[1], argv[2]))
    else:
        raise SystemExit("usage: python -m bench.capacity carrier STORE | runtime STORE URL N | restore STORE URL")


if __name__ == "__main__":
    main(sys.argv[1:])
