"""Webhook servers under test, each in its own process (``python -m bench.servers MODE``).

``baseline``: a bare aiohttp handler returning a fixed TwiML document: the
floor any aiohttp webhook pays on this machine.

``twilio N``: the real thing: a ``VoiceCallRuntime`` with provider twilio and
its ``WebhookServer`` on loopback, the Twilio emulator (same process, idle
once calls are set up) as the carrier, and N live calls placed through it.
Each callee answers at once and then waits at the gather for days, so every
call sits in its listening state with an open gather; the load generator then
plays the carrier.

Protocol: the process prints ONE JSON line (url, token, calls) once ready,
then serves until its stdin closes, then prints one JSON line of counters.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from typing import Any

from bench.common import ROOT

ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "0123456789abcdef0123456789abcdef"
WEBHOOK_PATH = "/voice/webhook"
# A say + gather document like the one our echo flow returns.
FIXED_TWIML = (b'<?xml version="1.0" encoding="UTF-8"?><Response><Say voice="Polly.Joanna">You said hello</Say>'
               b'<Gather input="speech" action="http://127.0.0.1/voice/webhook?callId=x&amp;type=gather&amp;'
               b'token=t" method="POST" timeout="3600" speechTimeout="auto"/></Response>')


async def _wait_stdin_closed() -> None:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)


def _ready(info: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(info) + "\n")
    sys.stdout.flush()


async def run_baseline() -> None:
    from aiohttp import web

    count = 0

    async def handle(request: web.Request) -> web.Response:
        nonlocal count
        await request.read()
        count += 1
        return web.Response(body=FIXED_TWIML, content_type="text/xml", charset="utf-8")

    app = web.Application()
    app.router.add_post(WEBHOOK_PATH, handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    _ready({"url": f"http://127.0.0.1:{port}{WEBHOOK_PATH}", "calls": []})
    await _wait_stdin_closed()
    await runner.cleanup()
    _ready({"handled": count})


def twilio_settings(store: str, emulator_url: str, **extra: Any) -> Any:
    from voicecall.engine.config import default_settings

    return default_settings().replace(
        provider="twilio", twilio={"accountSid": ACCOUNT_SID, "authToken": AUTH_TOKEN, "apiBaseUrl": emulator_url},
        fromNumber="+15005550006", store=store, serve={"port": 0, "bind": "127.0.0.1"},
        maxConcurrentCalls=20000, maxDurationSeconds=14000, flows={"paths": [str(ROOT / "bench" / "flows")]},
        **extra)


async def place_waiting_calls(runtime: Any, emulator: Any, n: int, *, batch: int = 50) -> list[str]:
    """Place ``n`` echo calls whose callees answer and then wait silently; return call ids."""
    from voicecall.providers.callee import Callee

    ids: list[str] = []

    async def one(i: int) -> str:
        to = f"+1555{i:07d}"
        emulator.set_callee(to, Callee.from_script([{"answer": {"after": 0}}, {"wait": 10 ** 6}]))
        return str(await runtime.initiate(to=to, message="Hello from the benchmark", flow="bench_echo"))

    for start in range(0, n, batch):
        ids.extend(await asyncio.gather(*(one(i) for i in range(start, min(n, start + batch)))))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        # Listening, and the gather delivered to the carrier (nothing left in the outbox).
        if all(runtime.sessions[c].record.state == "listening" and not runtime.sessions[c].outbox
               for c in ids if c in runtime.sessions):
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)    # the last resume fetches settle
    return ids


async def run_twilio(n_calls: int) -> None:
    from voicecall.engine.runtime import VoiceCallRuntime
    from voicecall.providers.twilio import TwilioEmulator

    with tempfile.TemporaryDirectory(prefix="voicecall-bench-") as store:
        emulator = TwilioEmulator(ACCOUNT_SID, AUTH_TOKEN)
        emulator_url = await emulator.start()
        runtime = VoiceCallRuntime(twilio_settings(store, emulator_url))
        await runtime.start()
        try:
            # The emulator's own set-up burst (hundreds of calls at once from
            # 127.0.0.1) would trip the per-IP in-flight cap; the measured
            # traffic afterwards runs under the default cap.
            limiter = runtime._webhook.limiter
            cap, limiter.per_ip = limiter.per_ip, 10_000
            t0 = time.perf_counter()
            ids = await place_waiting_calls(runtime, emulator, n_calls)
            placed_s = time.perf_counter() - t0
            limiter.per_ip = cap
            calls = [{"callId": c, "sid": runtime.sessions[c].record.provider_call_id,
                      "token": runtime.sessions[c].record.turn} for c in ids if c in runtime.sessions]
            _ready({"url": runtime.public_url, "calls": calls, "placed_s": placed_s,
                    "not_listening": sum(runtime.sessions[c].record.state != "listening" for c in ids)})
            await _wait_stdin_closed()
            counters = dict(runtime._webhook.counters) if runtime._webhook else {}
            stats = runtime.store.stats
            counters.update(transactions=stats.transactions, commits=stats.commits)
        finally:
            await runtime.stop()
            await emulator.stop()
    _ready(counters)


def main(argv: list[str]) -> None:
    mode = argv[0] if argv else ""
    if mode == "baseline":
        asyncio.run(run_baseline())
    elif mode == "twilio":
        asyncio.run(run_twilio(int(argv[1]) if len(argv) > 1 else 200))
    else:
        raise SystemExit("usage: python -m bench.servers baseline | twilio [N_CALLS]")


if __name__ == "__main__":
    main(sys.argv[1:])
