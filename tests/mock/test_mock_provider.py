"""MockProvider without a network: render, parse, verify."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicecall.engine.errors import SignatureError, VoiceCallError
from voicecall.engine.program import Program, Step
from voicecall.engine.security import load_or_create_mock_secret, mock_headers
from voicecall.providers.base import CallUrls, WebhookRequest
from voicecall.providers.mock import MockProvider, MockRenderError, MockWebhookError

PUBLIC = "https://hooks.example.test/voice/webhook"
URLS = CallUrls(PUBLIC, "c1")
NOW = 1_800_000_000.0


class FixedClock:
    def __init__(self, now: float = NOW):
        self.t = now

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def provider(tmp_path: Path) -> MockProvider:
    return MockProvider(None, store_dir=tmp_path, clock=FixedClock(), api_base_url="http://127.0.0.1:9/")


def rendered(provider: MockProvider, *steps: Step) -> tuple[str, Any]:
    reply = provider.render(Program("s", steps), URLS)
    assert reply.content_type == "application/json"
    assert reply.status == 200
    return reply.body.decode(), json.loads(reply.body)


def test_render_say_play_pause_dtmf_hangup_reject_exact(provider: MockProvider) -> None:
    text, _ = rendered(
        provider,
        Step("say", {"text": "Hello <there> & \"you\"", "voice": "alice"}),
        Step("play", {"url": "https://cdn.example.test/a.mp3", "loop": 2}),
        Step("pause", {"seconds": 3}),
        Step("dtmf", {"digits": "12#"}),
        Step("hangup", {"reason": "completed"}),
    )
    assert text == (
        '{"commands":[{"say":{"text":"Hello <there> & \\"you\\"","voice":"alice"}},'
        '{"play":{"loop":2,"url":"https://cdn.example.test/a.mp3"}},'
        '{"pause":{"seconds":3}},{"dtmf":{"digits":"12#"}},{"hangup":{"reason":"completed"}}]}'
    )
    text, _ = rendered(provider, Step("reject", {"reason": "busy"}))
    assert text == '{"commands":[{"reject":{"reason":"busy"}}]}'


def test_render_gather_with_prompt_adds_action_and_noinput_redirect(provider: MockProvider) -> None:
    gather = Step("gather", {
        "input": "speech dtmf", "token": "t7", "timeout": 4,
        "prompt": (Step("say", {"text": "Say something"}), Step("play", {"url": "https://x.test/b.wav"})),
    })
    _, doc = rendered(provider, Step("say", {"text": "Hi"}), gather)
    assert doc == {"commands": [
        {"say": {"text": "Hi"}},
        {"gather": {
            "input": "speech dtmf", "token": "t7", "timeout": 4,
            "prompt": [{"say": {"text": "Say something"}}, {"play": {"url": "https://x.test/b.wav"}}],
            "action": f"{PUBLIC}?callId=c1&type=gather&token=t7",
        }},
        {"redirect": {"url": f"{PUBLIC}?callId=c1&type=noinput&token=t7"}},
    ]}


def test_render_keepalive_pause_then_resume_redirect(provider: MockProvider) -> None:
    _, doc = rendered(provider, Step("keepalive", {"seconds": 10}))
    assert doc == {"commands": [
        {"pause": {"seconds": 10}},
        {"redirect": {"url": f"{PUBLIC}?callId=c1&type=resume"}},
    ]}
    _, doc = rendered(provider, Step("keepalive", {"seconds": 0}))
    assert doc == {"commands": [{"redirect": {"url": f"{PUBLIC}?callId=c1&type=resume"}}]}


def test_render_keeps_a_literal_redirect_and_is_deterministic(provider: MockProvider) -> None:
    program = Program("s", (Step("redirect", {"url": "https://other.example.test/x"}),))
    first = provider.render(program, URLS).body
    assert first == provider.render(program, URLS).body
    assert json.loads(first) == {"commands": [{"redirect": {"url": "https://other.example.test/x"}}]}


@pytest.mark.parametrize("kind", ["reply", "set", "end_call", "goto"])
def test_render_refuses_engine_steps(provider: MockProvider, kind: str) -> None:
    with pytest.raises(MockRenderError, match=kind):
        provider.render(Program("s", (Step(kind, {}),)), URLS)


def test_ack_and_declared_surface(provider: MockProvider) -> None:
    reply = provider.ack(request({"sid": "MC1", "event": "redirect", "seq": 1}, type_="resume"))
    assert (reply.body, reply.content_type) == (b'{"ok":true}', "application/json")
    assert provider.style == "document"
    assert provider.signature_headers == ("x-voicecall-timestamp", "x-voicecall-signature")
    assert {"say", "gather.speech", "gather.dtmf", "reject", "amd"} <= provider.capabilities
    assert "stream" not in provider.capabilities


# ---------------------------------------------------------------- parse

def request(body: Any, *, type_: str, call_id: str | None = "c1", token: str | None = None,
            headers: dict[str, str] | None = None, raw: bytes | None = None) -> WebhookRequest:
    query = [(k, v) for k, v in (("callId", call_id), ("type", type_), ("token", token)) if v is not None]
    if isinstance(body, dict) and "url" not in body:
        body = {**body, "url": PUBLIC + "?" + "&".join(f"{k}={v}" for k, v in query)}
    data = raw if raw is not None else json.dumps(body).encode()
    return WebhookRequest("POST", PUBLIC, "/voice/webhook", tuple(query), headers or {}, data)


def one(provider: MockProvider, body: dict[str, Any], **kw: Any) -> Any:
    events = provider.parse(request(body, **kw))
    assert len(events) == 1
    return events[0]


BASE = {"sid": "MCabc", "seq": 4, "from": "+15550001111", "to": "+15550002222", "direction": "outbound"}


@pytest.mark.parametrize(("event", "type_", "expected"), [
    ("initiated", "status", "call.initiated"),
    ("ringing", "status", "call.ringing"),
    ("answered", "status", "call.answered"),
    ("answered", "voice", "call.answered"),
])
def test_parse_lifecycle(provider: MockProvider, event: str, type_: str, expected: str) -> None:
    ev = one(provider, {**BASE, "event": event}, type_=type_)
    assert (ev.type, ev.call_id, ev.provider_call_id, ev.seq, ev.key, ev.token) == (
        expected, "c1", "MCabc", 4, "mock:MCabc:4", None)
    if event == "initiated":
        assert ev.data == {"direction": "outbound", "from": "+15550001111", "to": "+15550002222"}


@pytest.mark.parametrize(("reason", "ours"), [
    ("completed", "completed"), ("hangup-user", "hangup-user"), ("busy", "busy"),
    ("no-answer", "no-answer"), ("failed", "failed"), ("canceled", "hangup-bot"), ("rejected", "hangup-bot"),
])
def test_parse_ended_reasons(provider: MockProvider, reason: str, ours: str) -> None:
    ev = one(provider, {**BASE, "event": "ended", "reason": reason}, type_="status")
    assert (ev.type, dict(ev.data)) == ("call.ended", {"reason": ours})


def test_parse_turn_results_carry_the_token(provider: MockProvider) -> None:
    ev = one(provider, {**BASE, "event": "speech", "text": "a table", "confidence": 0.93}, type_="gather", token="t1")
    assert (ev.type, dict(ev.data), ev.token) == ("speech.final", {"text": "a table", "confidence": 0.93}, "t1")
    ev = one(provider, {**BASE, "event": "digits", "digits": "1#"}, type_="gather", token="t2")
    assert (ev.type, dict(ev.data), ev.token) == ("dtmf", {"digits": "1#"}, "t2")
    ev = one(provider, {**BASE, "event": "redirect"}, type_="noinput", token="t3")
    assert (ev.type, ev.token) == ("gather.timeout", "t3")
    ev = one(provider, {**BASE, "event": "noinput"}, type_="noinput", token="t4")
    assert (ev.type, ev.token) == ("gather.timeout", "t4")


@pytest.mark.parametrize("answered_by", ["human", "machine", "fax", "unknown"])
def test_parse_machine_detection(provider: MockProvider, answered_by: str) -> None:
    ev = one(provider, {**BASE, "event": "machine", "answeredBy": answered_by}, type_="machine")
    assert (ev.type, dict(ev.data)) == ("machine.detected", {"answeredBy": answered_by})
    with pytest.raises(MockWebhookError, match="answeredBy"):
        provider.parse(request({**BASE, "event": "machine", "answeredBy": "robot"}, type_="machine"))


def test_parse_resume_is_nothing(provider: MockProvider) -> None:
    assert provider.parse(request({**BASE, "event": "redirect"}, type_="resume")) == []


def test_parse_inbound(provider: MockProvider) -> None:
    body = {**BASE, "event": "inbound", "direction": "inbound"}
    ev = one(provider, body, type_="voice", call_id=None)
    assert (ev.type, dict(ev.data), ev.call_id, ev.provider_call_id) == (
        "call.initiated", {"direction": "inbound", "from": "+15550001111", "to": "+15550002222"}, None, "MCabc")
    with pytest.raises(MockWebhookError, match="without callId"):
        provider.parse(request(body, type_="voice", call_id="c1"))


@pytest.mark.parametrize(("body", "message"), [
    (b"not json", "not JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"event": "ringing", "seq": 1}', "'sid'"),
    (b'{"sid": "MC1", "seq": 1}', "'event'"),
    (b'{"sid": "MC1", "event": "ringing"}', "'seq'"),
    (b'{"sid": "MC1", "event": "ringing", "seq": true}', "'seq'"),
    (b'{"sid": "MC1", "event": "ringing", "seq": 1}', "'url'"),
    (b'{"sid": "MC1", "event": "ringing", "seq": 1, "url": "http://[::1/x?type=status"}', "unreadable 'url'"),
])
def test_parse_malformed(provider: MockProvider, body: bytes, message: str) -> None:
    with pytest.raises(MockWebhookError, match=message) as info:
        provider.parse(request(None, type_="status", raw=body))
    assert isinstance(info.value, VoiceCallError)


@pytest.mark.parametrize(("body", "message"), [
    ({**BASE, "event": "ended", "reason": "exploded"}, "reason 'exploded'"),
    ({**BASE, "event": "ended"}, "reason None"),
    ({**BASE, "event": "speech"}, "'text'"),
    ({**BASE, "event": "speech", "text": "hi", "confidence": "high"}, "confidence"),
    ({**BASE, "event": "digits"}, "'digits'"),
    ({**BASE, "event": "teleported"}, "unknown mock event 'teleported'"),
])
def test_parse_bad_fields(provider: MockProvider, body: dict[str, Any], message: str) -> None:
    with pytest.raises(MockWebhookError, match=message):
        provider.parse(request(body, type_="gather", token="t"))


def test_parse_refuses_a_query_that_differs_from_the_signed_url(provider: MockProvider) -> None:
    signed = {**BASE, "event": "speech", "text": "yes", "url": f"{PUBLIC}?callId=c1&type=gather&token=t1"}
    with pytest.raises(MockWebhookError, match="'callId'"):
        provider.parse(request(signed, type_="gather", call_id="c2", token="t1"))
    with pytest.raises(MockWebhookError, match="'token'"):
        provider.parse(request(signed, type_="gather", token="t9"))


# ---------------------------------------------------------------- verify

def signed(secret: bytes, body: bytes, at: float) -> WebhookRequest:
    return WebhookRequest("POST", PUBLIC, "/voice/webhook", (("type", "status"),), mock_headers(secret, body, at), body)


def test_verify_good_forged_stale(provider: MockProvider, tmp_path: Path) -> None:
    secret = load_or_create_mock_secret(tmp_path)
    assert provider.secret == secret
    body = b'{"sid":"MC1","event":"ringing","seq":1}'
    key = provider.verify(signed(secret, body, NOW))
    assert isinstance(key, str) and key
    assert provider.verify(signed(secret, body, NOW)) == key          # same request, same replay key
    with pytest.raises(SignatureError):
        provider.verify(signed(b"\x01" * 32, body, NOW))              # another secret
    tampered = signed(secret, body, NOW)
    with pytest.raises(SignatureError):
        provider.verify(WebhookRequest("POST", PUBLIC, "/", tampered.query, tampered.headers, body + b" "))
    with pytest.raises(SignatureError, match="stale"):
        provider.verify(signed(secret, body, NOW - 3600))
    with pytest.raises(SignatureError):
        provider.verify(WebhookRequest("POST", PUBLIC, "/", (), {}, body))


def test_verify_uses_the_store_secret(tmp_path: Path) -> None:
    one_ = MockProvider(None, store_dir=tmp_path / "a", clock=FixedClock(), api_base_url="http://127.0.0.1:9")
    two = MockProvider(None, store_dir=tmp_path / "b", clock=FixedClock(), api_base_url="http://127.0.0.1:9")
    body = b"{}"
    one_.verify(signed(one_.secret, body, NOW))
    with pytest.raises(SignatureError):
        two.verify(signed(one_.secret, body, NOW))
    assert (tmp_path / "a" / "mock.secret").exists()


# ---------------------------------------------------------------- snapshots and fuzz

CONVERSATION = Program("listen", (
    Step("say", {"text": "Hi, this is the restaurant.", "voice": "alice", "language": "en-US"}),
    Step("play", {"url": "https://cdn.example.test/chime.mp3", "loop": 1}),
    Step("pause", {"seconds": 1}),
    Step("dtmf", {"digits": "1w2"}),
    Step("gather", {"input": "speech dtmf", "token": "tok-1", "timeout": 5, "numDigits": 1,
                    "finishOnKey": "#", "language": "en-US", "speechTimeout": "auto",
                    "prompt": (Step("say", {"text": "How many people?"}),)}),
))


@pytest.mark.parametrize(("name", "program"), [
    ("conversation", CONVERSATION),
    ("notify", Program("notify", (Step("say", {"text": "Your table is ready."}), Step("pause", {"seconds": 2}),
                                  Step("hangup", {"reason": "completed"})))),
    ("hold", Program("hold", (Step("say", {"text": "One moment"}), Step("keepalive", {"seconds": 10})))),
    ("refuse", Program("refuse", (Step("reject", {"reason": "rejected"}),))),
])
def test_rendered_documents_snapshot(provider: MockProvider, snapshot: Any, name: str, program: Program) -> None:
    reply = provider.render(program, URLS)
    assert json.loads(reply.body) == snapshot(name=name)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200),
                 st.dictionaries(st.sampled_from(["sid", "event", "seq", "text", "digits", "reason", "url",
                                                  "answeredBy", "confidence", "from", "to"]),
                                 st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20),
                                           st.sampled_from(["speech", "ended", "inbound", "MC1", "completed"])),
                                 max_size=8).map(lambda d: json.dumps(d).encode())))
def test_parse_never_fails_with_anything_but_a_clear_error(body: bytes) -> None:
    req = WebhookRequest("POST", PUBLIC, "/voice/webhook", (("callId", "c1"), ("type", "status")), {}, body)
    try:
        events = MockProvider(None, store_dir=Path("/nonexistent"), clock=FixedClock(),
                              api_base_url="http://127.0.0.1:9").parse(req)
    except MockWebhookError as exc:
        assert str(exc)
    else:
        assert all(e.provider_call_id and e.key for e in events)
