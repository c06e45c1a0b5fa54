"""Benchmark 2: TwiML for one say + gather + hangup turn, rendered by our
template (``providers/twilio/render.py``) and by the ``twilio`` SDK's
``VoiceResponse`` builder, in this process, same document content."""

from __future__ import annotations

import time
from collections.abc import Callable

from bench.common import Row, median, percentile

TEXT = "Thanks for calling. Your table for four is booked for seven o'clock tonight."
PROMPT = "Is there anything else I can help you with?"
BASE = "https://voice.example.com/voice/webhook"
CALL_ID = "3fa5a185-cd48-4ed0-b17f-2d402e216dd9"
TOKEN = "jv9qNUp1Ms0G9g-Z"


def ours() -> Callable[[], str]:
    from voicecall.engine.program import Program, Step
    from voicecall.providers.base import CallUrls
    from voicecall.providers.twilio.render import render_twiml

    program = Program("speaking", (
        Step("say", {"text": TEXT}),
        Step("gather", {"input": "speech", "token": TOKEN, "timeout": 5, "speechTimeout": "auto",
                        "prompt": (Step("say", {"text": PROMPT}),)}),
        Step("hangup", {}),
    ))
    urls = CallUrls(BASE, CALL_ID)
    return lambda: render_twiml(program, urls, "Polly.Joanna")


def sdk() -> Callable[[], str]:
    from twilio.twiml.voice_response import VoiceResponse

    from voicecall.providers.base import CallUrls

    urls = CallUrls(BASE, CALL_ID)

    def build() -> str:
        # The URLs are built per document in both: each call and turn has its own.
        response = VoiceResponse()
        response.say(TEXT, voice="Polly.Joanna")
        gather = response.gather(input="speech", action=urls.webhook("gather", TOKEN), method="POST",
                                 timeout=5, speech_timeout="auto")
        gather.say(PROMPT, voice="Polly.Joanna")
        response.redirect(urls.webhook("noinput", TOKEN), method="POST")
        response.hangup()
        return str(response)

    return build


def _time(fn: Callable[[], str], *, rounds: int, per_round: int) -> list[float]:
    """Microseconds per document, one sample per round of ``per_round`` renders."""
    for _ in range(per_round):
        fn()                                       # warm: template compiled, caches filled
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(per_round):
            fn()
        samples.append((time.perf_counter() - t0) / per_round * 1e6)
    return samples


def run(*, quick: bool = False) -> list[Row]:
    rounds, per_round = (5, 20) if quick else (200, 200)
    theirs = _time(sdk(), rounds=rounds, per_round=per_round)
    mine = _time(ours(), rounds=rounds, per_round=per_round)
    size = len(ours()())
    return [
        Row("2 render", "twilio SDK VoiceResponse (baseline)", "µs", median(theirs), percentile(theirs, 99),
            note=f"say + gather(say) + redirect + hangup; {len(sdk()())} bytes"),
        Row("2 render", "voicecall render_twiml", "µs", median(mine), percentile(mine, 99),
            baseline=median(theirs), target="≤ 1.00× SDK", note=f"same document; {size} bytes; "
            f"median of {rounds} rounds × {per_round}"),
    ]
