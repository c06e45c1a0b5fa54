"""Steps → exact Telnyx command bodies (rendered from templates/*.json)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from telnyx_support import make_settings, request

from voicecall.engine.errors import RenderError
from voicecall.engine.program import Program, Step
from voicecall.providers.base import CallUrls
from voicecall.providers.telnyx import TelnyxProvider
from voicecall.providers.telnyx.commands import dial_body, native_voice, step_commands
from voicecall.providers.telnyx.parse import KIND_GATHER, KIND_PLAYBACK, KIND_PROMPT, encode_state

SAY_STATE = encode_state("c1", "tag", KIND_PLAYBACK)
TURN_STATE = encode_state("c1", "T", KIND_GATHER)
PROMPT_STATE = encode_state("c1", "T", KIND_PROMPT)
LIFE_STATE = encode_state("c1", "tag")
VOICE = "AWS.Polly.Joanna-Neural"
DIGITS = {"minimum_digits": 1, "terminating_digit": "#", "valid_digits": "0123456789*#", "client_state": TURN_STATE}


def bodies(step: Step, voice: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    return [(c.name, dict(c.body)) for c in step_commands(step, "c1", "tag", voice)]


@pytest.mark.parametrize("step, expected", [
    (Step("say", {"text": 'Hi "there" </x>'}),
     [("speak", {"payload": 'Hi "there" </x>', "payload_type": "text", "voice": VOICE, "language": "en-US",
                 "client_state": SAY_STATE})]),
    (Step("say", {"text": "Hola", "voice": "Polly.Lupe", "language": "es-US"}),
     [("speak", {"payload": "Hola", "payload_type": "text", "voice": "AWS.Polly.Lupe", "language": "es-US",
                 "client_state": SAY_STATE})]),
    (Step("play", {"url": "https://example.com/a.mp3"}),
     [("playback_start", {"audio_url": "https://example.com/a.mp3", "loop": 1, "client_state": SAY_STATE})]),
    (Step("play", {"url": "https://example.com/a.mp3", "loop": 0}),
     [("playback_start", {"audio_url": "https://example.com/a.mp3", "loop": "infinity",
                          "client_state": SAY_STATE})]),
    (Step("gather", {"input": "dtmf", "token": "T", "timeout": 7, "numDigits": 4, "finishOnKey": "*",
                     "prompt": (Step("say", {"text": "Enter"}), Step("pause", {"seconds": 1}),
                                Step("say", {"text": "your code"}))}),
     [("gather_using_speak", {"payload": "Enter your code", "payload_type": "text", "voice": VOICE,
                              "language": "en-US", "maximum_digits": 4, "timeout_millis": 7000,
                              **DIGITS, "terminating_digit": "*"})]),
    (Step("gather", {"input": "dtmf", "token": "T", "timeout": 5}),
     [("gather", {"maximum_digits": 128, "timeout_millis": 5000, **DIGITS})]),
    (Step("gather", {"input": "dtmf", "token": "T", "timeout": 5, "prompt": (Step("play", {"url": "https://x/p.wav"}),)}),
     [("gather_using_audio", {"audio_url": "https://x/p.wav", "maximum_digits": 128, "timeout_millis": 5000,
                              **DIGITS})]),
    (Step("gather", {"input": "speech", "token": "T", "timeout": 5, "language": "de-DE",
                     "prompt": (Step("say", {"text": "Yes?"}),)}),
     [("speak", {"payload": "Yes?", "payload_type": "text", "voice": VOICE, "language": "en-US",
                 "client_state": PROMPT_STATE}),
      ("transcription_start", {"transcription_engine": "Google", "transcription_engine_config": {"language": "de"},
                               "transcription_tracks": "inbound", "client_state": TURN_STATE})]),
    (Step("gather", {"input": "speech dtmf", "token": "T", "timeout": 5, "numDigits": 1,
                     "prompt": (Step("say", {"text": "Say or press one"}),)}),
     [("speak", {"payload": "Say or press one", "payload_type": "text", "voice": VOICE, "language": "en-US",
                 "client_state": PROMPT_STATE}),
      ("gather", {"maximum_digits": 1, "timeout_millis": 5000, **DIGITS}),
      ("transcription_start", {"transcription_engine": "Google", "transcription_engine_config": {"language": "en"},
                               "transcription_tracks": "inbound", "client_state": TURN_STATE})]),
    (Step("dtmf", {"digits": "12w#"}),
     [("send_dtmf", {"digits": "12w#", "duration_millis": 250, "client_state": LIFE_STATE})]),
    (Step("hangup", {}), [("hangup", {"client_state": LIFE_STATE})]),
    (Step("reject", {"reason": "rejected"}), [("reject", {"cause": "CALL_REJECTED", "client_state": LIFE_STATE})]),
    (Step("reject", {"reason": "busy"}), [("reject", {"cause": "USER_BUSY", "client_state": LIFE_STATE})]),
    (Step("keepalive", {"seconds": 30}), []),
])
def test_step_bodies(step: Step, expected: list[Any]) -> None:
    assert bodies(step) == expected


def test_speech_gathers_listen_once_the_last_prompt_item_ended() -> None:
    step = Step("gather", {"input": "speech", "token": "T", "prompt": (
        Step("say", {"text": "One"}), Step("play", {"url": "https://x/a.mp3"}))})
    commands = step_commands(step, "c1", "tag")
    assert [(c.name, c.then_wait) for c in commands] == [
        ("speak", False), ("playback_start", True), ("transcription_start", False)]
    assert all(not c.then_wait for c in step_commands(Step("gather", {"input": "dtmf", "token": "T", "prompt": (
        Step("say", {"text": "One"}),)}), "c1", "tag"))


def test_dial_body() -> None:
    assert dial_body(connection_id="conn", to="+15550002000", from_="+15550001000", webhook_url="https://h/w?x=1",
                     client_state=LIFE_STATE, timeout_secs=30, time_limit_secs=None, machine_detection=False) == {
        "connection_id": "conn", "to": "+15550002000", "from": "+15550001000", "webhook_url": "https://h/w?x=1",
        "webhook_url_method": "POST", "client_state": LIFE_STATE, "timeout_secs": 30}
    with_amd = dial_body(connection_id="conn", to="+1", from_="+2", webhook_url="u", client_state="s",
                         timeout_secs=5, time_limit_secs=300, machine_detection=True)
    assert with_amd["answering_machine_detection"] == "detect" and with_amd["time_limit_secs"] == 300


@pytest.mark.parametrize("requested, configured, voice", [
    (None, None, VOICE), ("nova", None, "AWS.Polly.Salli-Neural"), (None, "onyx", "AWS.Polly.Brian-Neural"),
    ("Polly.Amy", "nova", "AWS.Polly.Amy"), ("Azure.en-US-JennyNeural", None, "Azure.en-US-JennyNeural"),
    ("female", None, "female"), ("unheard-of", None, VOICE),
])
def test_voice_mapping(requested: str | None, configured: str | None, voice: str) -> None:
    assert native_voice(requested, configured) == voice


def test_configured_tts_voice_reaches_speak() -> None:
    (_name, body), = bodies(Step("say", {"text": "x"}), voice="shimmer")
    assert body["voice"] == "AWS.Polly.Kimberly-Neural"


@pytest.mark.parametrize("step, words", [
    (Step("say", {"text": ""}), "non-empty"),
    (Step("dtmf", {"digits": "12x"}), "not 0-9"),
    (Step("gather", {"input": "smell", "token": "T"}), "not speech, dtmf or both"),
    (Step("gather", {"input": "dtmf", "token": "T", "numDigits": "many"}), "whole number"),
    (Step("gather", {"input": "dtmf", "token": "T", "prompt": (Step("say", {"text": "a"}),
                                                              Step("play", {"url": "https://x"}))}), "not a mix"),
    (Step("gather", {"input": "speech", "token": "T", "prompt": (Step("hangup", {}),)}), "not 'hangup'"),
    (Step("pause", {"seconds": 2}), "engine timer"),
    (Step("stream", {"url": "wss://x"}), "cannot be sent to Telnyx"),
    (Step("redirect", {"url": "https://x"}), "cannot be sent to Telnyx"),
])
def test_bad_steps_are_named(step: Step, words: str) -> None:
    with pytest.raises(RenderError, match=words):
        step_commands(step, "c1", "tag")


def test_render_lists_the_commands_a_program_issues(tmp_path: Any) -> None:
    provider = TelnyxProvider(make_settings("k"), store_dir=tmp_path)
    program = Program("answered", (Step("say", {"text": "Hi"}), Step("pause", {"seconds": 2}), Step("hangup", {})))
    reply = provider.render(program, CallUrls("https://example.com/hook", "c1"))
    assert reply.content_type == "application/json"
    listed = json.loads(reply.body)
    assert [item.get("command", item.get("wait")) for item in listed] == ["speak", 2, "hangup"]
    assert listed[0]["body"]["client_state"] == encode_state("c1", "step0", KIND_PLAYBACK)
    assert provider.ack(request(b"{}", {})).body == b"{}"
