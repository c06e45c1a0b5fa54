"""Benchmark 4: turn overhead, the time the engine adds between a caller's final
speech result and our next instruction leaving, with a responder that answers
at once (the offline responder).

Whole calls run for real on loopback (``voicecall.testing.Harness``: runtime,
webhook server, mock carrier, signatures, SQLite) on the built-in
``conversation`` flow, with a callee that speaks N turns. The engine measures
each turn itself (``metrics.turn`` events in the store: from the speech result
being dispatched to the next program being handed to the carrier, through the
``thinking`` state, the responder, ``reply.ready`` and the push). The harness
runs on a ``ScaledClock`` so the carrier's simulated speech takes no real
time; engine figures are converted back to real milliseconds.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.common import Row, median, percentile

SCALE = 0.001     # 1 simulated second = 1 real millisecond


async def _turns(provider: str, n_turns: int, calls: int) -> list[float]:
    from voicecall.engine.testing import Harness, Scenario

    script: list[Any] = [{"answer": {"after": 0}}, *({"say": f"this is turn {i}"} for i in range(n_turns)),
                         {"hangup": {}}]
    config = {"maxDurationSeconds": 14000, "maxConcurrentCalls": calls}
    latencies: list[float] = []
    async with Harness(provider, scale=SCALE, config=config) as harness:
        async def one(i: int) -> None:
            scenario = Scenario(flow="conversation", provider=provider, callee=script,
                                call={"to": f"+1555{i:07d}", "message": "Hello", "mode": "conversation"})
            result = await harness.run(scenario)
            for event in await harness.runtime.store.events(result.record["callId"]):
                if event["type"] == "metrics.turn":
                    latencies.append(float(event["data"]["turnLatencyMs"]) * SCALE)

        await asyncio.gather(*(one(i) for i in range(calls)))
    return latencies


def run(*, quick: bool = False) -> list[Row]:
    rows = []
    for provider in ("mock", "twilio"):
        n_turns, calls = (3, 1) if quick else (100, 4)
        latencies = asyncio.run(_turns(provider, n_turns, calls))
        rows.append(Row("4 turn overhead", f"{provider}: speech.final → next instruction out", "ms",
                        median(latencies), percentile(latencies, 99), target="p99 < 5 ms",
                        note=f"n={len(latencies)} turns over {calls} concurrent calls; responder instant"))
    return rows
