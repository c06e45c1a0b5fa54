"""``voicecall demo``: whole calls on the mock carrier, printed as timelines.

Everything is real and local: the runtime, its webhook server on a loopback
port, the mock carrier's own server, signed webhooks, SQLite. Time runs
faster than real time; the timestamps shown are call time.
"""

from __future__ import annotations

import json
from typing import Any, TextIO

from .testing import Harness, Scenario

ALLOWED_CALLER = "+15550002222"
CALLS: tuple[tuple[str, Scenario], ...] = (
    ("Notify call: one message, then hang up", Scenario(
        flow="notify", call={"to": "+15550001111", "message": "Hello! Your table for two is ready."},
        callee=({"answer": {"after": 2}},))),
    ("Conversation call: two caller turns, each answered by the responder", Scenario(
        flow="conversation",
        call={"to": "+15550003333", "mode": "conversation", "message": "Hi, this is the restaurant calling back."},
        callee=({"answer": {"after": 1}}, {"say": "Do you still have a table tonight?"},
                {"say": "Great, for two people please."}, "hangup"))),
    ("Inbound call from an allowlisted number", Scenario(
        flow="inbound_greeting", call={"direction": "inbound", "from": ALLOWED_CALLER, "to": "+15550000000"},
        callee=({"say": "What time do you open tomorrow?"}, "hangup"))),
)


async def run_demo(out: TextIO, *, provider: str = "mock", scale: float = 0.02, as_json: bool = False,
                   settings: Any = None) -> int:
    """``settings``: a user's config (its flows, responder, greeting); the carrier is always simulated."""
    config = {"inboundPolicy": "allowlist", "allowFrom": [ALLOWED_CALLER],
              "inboundGreeting": "Thanks for calling the voicecall demo line."}
    records: list[dict[str, Any]] = []
    async with Harness(provider, settings=settings, config=config, scale=scale) as harness:
        if not as_json:
            out.write(f"voicecall demo: {provider} carrier on loopback, webhook {harness.runtime.public_url}\n"
                      f"store {harness.runtime.settings.store_dir} (temporary)\n")
        for index, (title, scenario) in enumerate(CALLS, 1):
            result = await harness.run(scenario)
            records.append(result.record)
            if as_json:
                continue
            out.write(f"\n== {index}. {title}\n")
            for at, who, what in result.timeline:
                out.write(f"  +{at:6.2f}s  {who:<8} {what}\n")
            r = result.record
            out.write(f"  -> {r['state']} ({r['endReason']}), {r['turnCount']} caller turn(s)\n")
    if as_json:
        out.write(json.dumps({"calls": records}, indent=2) + "\n")
    else:
        out.write("\nFinal call records (as `voicecall status --json` prints them):\n")
        for record in records:
            out.write(json.dumps(record, indent=2) + "\n")
    return 0 if all(r["terminal"] for r in records) else 1
