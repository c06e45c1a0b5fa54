"""TwiML rendering: every step kind as an exact string, parsed by a real XML parser."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from twilio.twiml.voice_response import VoiceResponse
from twilio_support import make_settings

from voicecall.engine.errors import RenderError
from voicecall.engine.program import Program, Step
from voicecall.providers.base import CallUrls
from voicecall.providers.twilio import TwilioProvider
from voicecall.providers.twilio.render import native_voice, render_twiml

URLS = CallUrls("https://voice.example.com/voice/webhook", "call-1")
HEAD = '<?xml version="1.0" encoding="UTF-8"?><Response>'
HOOK = "https://voice.example.com/voice/webhook?callId=call-1&amp;type="


def doc(*steps: Step, voice: str | None = None) -> str:
    text = render_twiml(Program("s", steps), URLS, voice)
    root = ET.fromstring(text.encode())
    assert root.tag == "Response"
    return text


CASES = [
    (Step("say", {"text": "Hello"}), '<Say voice="Polly.Joanna">Hello</Say>'),
    (Step("say", {"text": "Hola", "voice": "Polly.Lupe", "language": "es-US"}),
     '<Say language="es-US" voice="Polly.Lupe">Hola</Say>'),
    (Step("play", {"url": "https://example.com/a.mp3"}), "<Play>https://example.com/a.mp3</Play>"),
    (Step("play", {"url": "https://example.com/a.mp3", "loop": 2}), '<Play loop="2">https://example.com/a.mp3</Play>'),
    (Step("pause", {"seconds": 2}), '<Pause length="2"/>'),
    (Step("pause", {"seconds": 0}), ""),
    (Step("hangup", {}), "<Hangup/>"),
    (Step("reject", {}), '<Reject reason="rejected"/>'),
    (Step("reject", {"reason": "busy"}), '<Reject reason="busy"/>'),
    (Step("dtmf", {"digits": "12w#"}), '<Play digits="12w#"/>'),
    (Step("redirect", {"url": "https://example.com/next"}), '<Redirect method="POST">https://example.com/next</Redirect>'),
    (Step("keepalive", {"seconds": 5}),
     f'<Pause length="5"/><Redirect method="POST">{HOOK}resume</Redirect>'),
    (Step("keepalive", {"seconds": 0}), f'<Redirect method="POST">{HOOK}resume</Redirect>'),
    (Step("stream", {"url": "wss://example.com/media", "parameters": {"flow_id": "abc123", "call_token": "t0k"}}),
     '<Connect><Stream url="wss://example.com/media"><Parameter name="flow_id" value="abc123"/>'
     '<Parameter name="call_token" value="t0k"/></Stream></Connect>'),
    (Step("gather", {"input": "speech", "token": "t1"}),
     f'<Gather action="{HOOK}gather&amp;token=t1" input="speech" method="POST" speechTimeout="auto"></Gather>'
     f'<Redirect method="POST">{HOOK}noinput&amp;token=t1</Redirect>'),
    (Step("gather", {"input": "both", "token": "t2", "timeout": 5, "numDigits": 1, "finishOnKey": "#",
                     "language": "en-US", "prompt": (Step("say", {"text": "Press 1 or say yes."}),
                                                     Step("play", {"url": "https://e.com/b.mp3"}))}),
     f'<Gather action="{HOOK}gather&amp;token=t2" finishOnKey="#" input="dtmf speech" language="en-US" '
     'method="POST" numDigits="1" speechTimeout="auto" timeout="5"><Say voice="Polly.Joanna">Press 1 or say yes.</Say>'
     f'<Play>https://e.com/b.mp3</Play></Gather><Redirect method="POST">{HOOK}noinput&amp;token=t2</Redirect>'),
    (Step("gather", {"input": "dtmf", "token": "t3", "numDigits": 4}),
     f'<Gather action="{HOOK}gather&amp;token=t3" input="dtmf" method="POST" numDigits="4"></Gather>'
     f'<Redirect method="POST">{HOOK}noinput&amp;token=t3</Redirect>'),
]


@pytest.mark.parametrize(("step", "xml"), CASES, ids=[f"{i}-{c[0].kind}" for i, c in enumerate(CASES)])
def test_every_step_kind(step: Step, xml: str) -> None:
    assert doc(step) == f"{HEAD}{xml}</Response>"


def test_notify_document_matches_the_sdk_shape() -> None:
    ours = doc(Step("say", {"text": "Your table is ready"}), Step("pause", {"seconds": 3}), Step("hangup", {}))
    sdk = VoiceResponse()
    sdk.say("Your table is ready", voice="Polly.Joanna")
    sdk.pause(length=3)
    sdk.hangup()
    # Same tree; the SDK writes `<Hangup />` with a space, we write `<Hangup/>`.
    assert ET.tostring(ET.fromstring(ours.encode())) == ET.tostring(ET.fromstring(str(sdk).encode()))


def test_text_and_attributes_are_escaped() -> None:
    text = doc(Step("say", {"text": 'Tom & Jerry <3 "quotes" {{7*7}}'}),
               Step("play", {"url": 'https://e.com/a.mp3?x=1&y="2"'}))
    assert "Tom &amp; Jerry &lt;3" in text and "{{7*7}}" in text
    root = ET.fromstring(text.encode())
    assert root[0].text == 'Tom & Jerry <3 "quotes" {{7*7}}'
    assert root[1].text == 'https://e.com/a.mp3?x=1&y="2"'
    hostile = doc(Step("stream", {"url": 'wss://e.com/"><Hangup/>', "parameters": {"a\"b": "<x>"}}))
    stream = ET.fromstring(hostile.encode())[0][0]
    assert stream.get("url") == 'wss://e.com/"><Hangup/>' and stream[0].get("value") == "<x>"
    assert ET.fromstring(hostile.encode()).find("Hangup") is None


def test_voices() -> None:
    assert native_voice(None, "onyx") == "Polly.Brian"
    assert native_voice("shimmer") == "Polly.Kimberly"
    assert native_voice("Google.en-US-Neural2-F", "nova") == "Google.en-US-Neural2-F"
    assert native_voice(None, "some-elevenlabs-id") == "Polly.Joanna"
    assert 'voice="Polly.Salli"' in doc(Step("say", {"text": "x"}), voice="nova")
    assert 'voice="Polly.Amy"' in doc(Step("say", {"text": "x", "voice": "fable"}), voice="nova")


def test_provider_uses_configured_voice_and_xml_content_type() -> None:
    settings = make_settings().replace(tts={"provider": "openai", "openai": {"voice": "echo"}})
    reply = TwilioProvider(settings).render(Program("s", (Step("say", {"text": "Hi"}),)), URLS)
    assert reply.content_type == "text/xml"
    assert reply.body == f'{HEAD}<Say voice="Polly.Matthew">Hi</Say></Response>'.encode()


@pytest.mark.parametrize(("step", "message"), [
    (Step("dtmf", {"digits": "12a"}), "dtmf digits"),
    (Step("gather", {"input": "telepathy"}), "gather input"),
    (Step("gather", {"input": "speech", "prompt": (Step("hangup", {}),)}), "gather prompt"),
    (Step("pause", {"seconds": "soon"}), "whole number"),
    (Step("say", {"text": ""}), "non-empty"),
    (Step("reply", {}), "cannot be sent to Twilio"),
])
def test_bad_steps_raise_render_errors(step: Step, message: str) -> None:
    with pytest.raises(RenderError, match=message):
        doc(step)
