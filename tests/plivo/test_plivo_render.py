"""Programs → Plivo XML: every step kind, exact strings, parsed back with
xml.etree, and escaping of runtime text."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from plivo_support import make_settings, request

from voicecall.engine.errors import RenderError
from voicecall.engine.program import Program, Step
from voicecall.providers.base import CallUrls
from voicecall.providers.plivo import PlivoProvider
from voicecall.providers.plivo.render import native_voice

URLS = CallUrls("https://voice.example.com/voice/webhook", "c1", stream_url="wss://voice.example.com/voice/stream")
HOOK = "https://voice.example.com/voice/webhook?callId=c1&amp;type="
HEAD = '<?xml version="1.0" encoding="UTF-8"?><Response>'


def render(*steps: Step, settings_voice: str | None = None) -> str:
    settings = make_settings()
    if settings_voice:
        settings = settings.replace(tts={"provider": "openai", "openai": {"voice": settings_voice}})
    reply = PlivoProvider(settings).render(Program("s", steps), URLS)
    assert reply.content_type == "text/xml"
    text = reply.body.decode()
    ET.fromstring(text.encode())            # every document is well-formed XML
    return text


CASES = [
    (Step("say", {"text": "Hello there"}), '<Speak voice="WOMAN">Hello there</Speak>'),
    (Step("say", {"text": "Hi", "voice": "Polly.Amy", "language": "en-GB"}),
     '<Speak voice="Polly.Amy" language="en-GB">Hi</Speak>'),
    (Step("play", {"url": "https://x.example/a.mp3"}), "<Play>https://x.example/a.mp3</Play>"),
    (Step("play", {"url": "https://x.example/a.mp3", "loop": 2}), '<Play loop="2">https://x.example/a.mp3</Play>'),
    (Step("pause", {"seconds": 3}), '<Wait length="3"/>'),
    (Step("pause", {"seconds": 0}), ""),
    (Step("hangup", {}), "<Hangup/>"),
    (Step("reject", {"reason": "rejected"}), '<Hangup reason="rejected"/>'),
    (Step("reject", {"reason": "busy"}), '<Hangup reason="busy"/>'),
    (Step("reject", {"reason": "other"}), '<Hangup reason="rejected"/>'),
    (Step("dtmf", {"digits": "12w#"}), "<DTMF>12w#</DTMF>"),
    (Step("redirect", {"url": "https://x.example/next?a=1&b=2"}),
     '<Redirect method="POST">https://x.example/next?a=1&amp;b=2</Redirect>'),
    (Step("keepalive", {"seconds": 5}), f'<Wait length="5"/><Redirect method="POST">{HOOK}resume</Redirect>'),
    (Step("keepalive", {"seconds": 0}), f'<Redirect method="POST">{HOOK}resume</Redirect>'),
    (Step("stream", {"url": "wss://s.example/media", "parameters": {"token": "abc123"}}),
     '<Stream bidirectional="true" audioTrack="inbound" contentType="audio/x-mulaw;rate=8000" '
     'extraHeaders="token=abc123" keepCallAlive="true">wss://s.example/media</Stream>'),
    (Step("stream", {}), '<Stream bidirectional="true" audioTrack="inbound" contentType="audio/x-mulaw;rate=8000" '
     'keepCallAlive="true">wss://voice.example.com/voice/stream</Stream>'),
]


@pytest.mark.parametrize(("step", "xml"), CASES, ids=[f"{c[0].kind}-{i}" for i, c in enumerate(CASES)])
def test_each_step(step: Step, xml: str) -> None:
    assert render(step) == f"{HEAD}{xml}</Response>"


@pytest.mark.parametrize(("input_", "plivo"), [("speech", "speech"), ("dtmf", "dtmf"), ("both", "dtmf speech")])
def test_gather_falls_through_to_noinput(input_: str, plivo: str) -> None:
    step = Step("gather", {"input": input_, "token": "t1", "timeout": 8, "numDigits": 1, "language": "en-US",
                           "prompt": (Step("say", {"text": "Press one"}), Step("pause", {"seconds": 1}),
                                      Step("play", {"url": "https://x.example/b.wav"}))})
    speech_end = ' speechEndTimeout="3"' if "speech" in plivo else ""
    step = Step("gather", {**step.params, "speechTimeout": 3})
    assert render(step) == (
        f'{HEAD}<GetInput action="{HOOK}gather&amp;token=t1" method="POST" inputType="{plivo}" '
        f'executionTimeout="8"{speech_end} numDigits="1" language="en-US" redirect="true">'
        '<Speak voice="WOMAN">Press one</Speak><Wait length="1"/><Play>https://x.example/b.wav</Play>'
        f'</GetInput><Redirect method="POST">{HOOK}noinput&amp;token=t1</Redirect></Response>')
    root = ET.fromstring(render(step))
    gather = root[0]
    assert gather.get("action") == "https://voice.example.com/voice/webhook?callId=c1&type=gather&token=t1"
    assert root[1].tag == "Redirect" and (root[1].text or "").endswith("type=noinput&token=t1")


def test_gather_timeouts_clamped_and_finish_key() -> None:
    root = ET.fromstring(render(Step("gather", {"input": "dtmf", "timeout": 120, "finishOnKey": ""})))
    assert root[0].get("executionTimeout") == "60" and root[0].get("finishOnKey") == "none"
    root = ET.fromstring(render(Step("gather", {"input": "speech", "timeout": 1, "speechTimeout": "auto"})))
    assert root[0].get("executionTimeout") == "5" and root[0].get("speechEndTimeout") == "auto"
    root = ET.fromstring(render(Step("gather", {"input": "speech", "speechTimeout": 30})))
    assert root[0].get("speechEndTimeout") == "10" and root[0].get("executionTimeout") == "5"


def test_runtime_text_is_escaped() -> None:
    text = 'Tom & Jerry <3 "q" </Speak><Hangup/>'
    xml = render(Step("say", {"text": text}))
    assert xml == (f'{HEAD}<Speak voice="WOMAN">Tom &amp; Jerry &lt;3 &#34;q&#34; '
                   '&lt;/Speak&gt;&lt;Hangup/&gt;</Speak></Response>')
    assert ET.fromstring(xml)[0].text == text


def test_voices() -> None:
    assert native_voice("nova") == "Polly.Salli"
    assert native_voice("man") == "MAN"
    assert native_voice(None, "Polly.Brian") == "Polly.Brian"
    assert native_voice("Google.en-US-x") == "WOMAN"
    assert 'voice="Polly.Matthew"' in render(Step("say", {"text": "x"}), settings_voice="echo")


@pytest.mark.parametrize(("step", "message"), [
    (Step("say", {"text": ""}), "non-empty"),
    (Step("dtmf", {"digits": "12a"}), "dtmf digits"),
    (Step("gather", {"input": "video"}), "speech, dtmf or both"),
    (Step("gather", {"input": "dtmf", "prompt": (Step("dtmf", {"digits": "1"}),)}), "gather prompt"),
    (Step("pause", {"seconds": "soon"}), "whole number"),
    (Step("stream", {"url": "wss://s", "parameters": {"a-b": "c"}}), "alphanumeric"),
    (Step("reply", {}), "cannot be sent to Plivo"),
])
def test_bad_steps(step: Step, message: str) -> None:
    with pytest.raises(RenderError, match=message):
        render(step)


def test_ack() -> None:
    provider = PlivoProvider(make_settings())
    for kind in ("hangup", "status", "machine"):
        reply = provider.ack(request(f"https://h.example/w?callId=c1&type={kind}"))
        assert reply.status == 200 and reply.body == b""
    reply = provider.ack(request("https://h.example/w?callId=c1&type=gather&token=t9"))
    assert reply.body.decode() == (f'{HEAD}<Wait length="1"/><Redirect method="POST">'
                                   "https://h.example/w?callId=c1&amp;type=resume</Redirect></Response>")
