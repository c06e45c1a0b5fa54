"""Webhook parsing: every CallStatus, gather results, no input, inbound, AMD, bad input."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from twilio_support import make_settings

from voicecall.engine.security import Rejection
from voicecall.providers.base import WebhookRequest
from voicecall.providers.twilio import TwilioProvider

SID = "CA" + "a" * 32
provider = TwilioProvider(make_settings())


def req(query: dict[str, str], **form: str) -> WebhookRequest:
    base = {"CallSid": SID, "AccountSid": "AC" + "0" * 32, "From": "+15005550006", "To": "+14155551212",
            "Direction": "outbound-api", "ApiVersion": "2010-04-01"}
    fields = tuple({**base, **form}.items())
    url = "https://voice.example.com/voice/webhook?" + urlencode(query)
    return WebhookRequest("POST", url, "/voice/webhook", tuple(query.items()), {}, urlencode(fields).encode(), fields)


STATUS = [
    ("queued", "call.initiated", {}),
    ("initiated", "call.initiated", {}),
    ("ringing", "call.ringing", {}),
    ("in-progress", "call.answered", {}),
    ("completed", "call.ended", {"reason": "completed", "duration": 42}),
    ("busy", "call.ended", {"reason": "busy", "duration": 42}),
    ("failed", "call.ended", {"reason": "failed", "duration": 42}),
    ("no-answer", "call.ended", {"reason": "no-answer", "duration": 42}),
    ("canceled", "call.ended", {"reason": "hangup-bot", "duration": 42}),
]


@pytest.mark.parametrize(("status", "event", "data"), STATUS)
def test_status_callbacks(status: str, event: str, data: dict[str, object]) -> None:
    (ev,) = provider.parse(req({"callId": "c1", "type": "status"}, CallStatus=status, SequenceNumber="3",
                               CallDuration="42"))
    assert (ev.type, dict(ev.data)) == (event, data)
    assert (ev.call_id, ev.provider_call_id, ev.seq) == ("c1", SID, 3)
    assert ev.key == f"twilio:{SID}:{status}:3"


def test_answered_voice_fetch_with_amd() -> None:
    events = provider.parse(req({"callId": "c1", "type": "voice"}, CallStatus="in-progress",
                                AnsweredBy="machine_start"))
    assert [(e.type, dict(e.data)) for e in events] == [
        ("call.answered", {"answeredBy": "machine_start"}), ("machine.detected", {"answeredBy": "machine_start"})]
    (human,) = provider.parse(req({"callId": "c1", "type": "voice"}, CallStatus="in-progress", AnsweredBy="human"))
    assert dict(human.data) == {"answeredBy": "human"} and human.key is None
    (amd,) = provider.parse(req({"callId": "c1", "type": "machine"}, CallStatus="in-progress",
                                AnsweredBy="machine_end_beep"))
    assert (amd.type, amd.data["answeredBy"]) == ("machine.detected", "machine_end_beep")


def test_gather_results_carry_the_turn_token() -> None:
    q = {"callId": "c1", "type": "gather", "token": "t7"}
    (speech,) = provider.parse(req(q, CallStatus="in-progress", SpeechResult="Yes, café", Confidence="0.9123"))
    assert (speech.type, dict(speech.data), speech.token) == (
        "speech.final", {"text": "Yes, café", "confidence": 0.9123}, "t7")
    (dtmf,) = provider.parse(req(q, CallStatus="in-progress", Digits="42", SpeechResult=""))
    assert (dtmf.type, dict(dtmf.data), dtmf.token) == ("dtmf", {"digits": "42"}, "t7")
    (empty,) = provider.parse(req(q, CallStatus="in-progress", Digits=""))
    assert empty.type == "gather.timeout"
    (noinput,) = provider.parse(req({"callId": "c1", "type": "noinput", "token": "t7"}, CallStatus="in-progress"))
    assert (noinput.type, noinput.token) == ("gather.timeout", "t7")
    assert provider.parse(req({"callId": "c1", "type": "resume"}, CallStatus="in-progress")) == []
    assert provider.parse(req({"callId": "c1", "type": "redirect"}, CallStatus="in-progress")) == []


def test_inbound_voice_request() -> None:
    (ev,) = provider.parse(req({"type": "voice"}, CallStatus="ringing", Direction="inbound",
                               From="+14155550100", To="+15005550006"))
    assert ev.type == "call.initiated" and ev.call_id is None and ev.provider_call_id == SID
    assert dict(ev.data) == {"direction": "inbound", "from": "+14155550100", "to": "+15005550006"}


@pytest.mark.parametrize(("query", "form", "message"), [
    ({"callId": "c1", "type": "status"}, {"CallSid": "", "CallStatus": "completed"}, "CallSid is missing"),
    ({"callId": "c1", "type": "status"}, {"CallSid": "<script>", "CallStatus": "completed"}, "not a Twilio call SID"),
    ({"callId": "c1", "type": "status"}, {"CallStatus": "exploded"}, "unknown CallStatus"),
    ({"callId": "c1", "type": "status"}, {"CallStatus": "ringing", "SequenceNumber": "x1"}, "SequenceNumber"),
    ({"callId": "c1", "type": "teleport"}, {"CallStatus": "ringing"}, "unknown webhook type"),
    ({"callId": "c1", "type": "gather"}, {"SpeechResult": "hi", "Confidence": "high"}, "Confidence"),
    ({"type": "voice"}, {"CallStatus": "ringing", "Direction": "outbound-api"}, "not inbound"),
    ({"callId": "c1", "type": "machine"}, {"CallStatus": "in-progress"}, "AnsweredBy"),
])
def test_garbage_is_a_clear_400(query: dict[str, str], form: dict[str, str], message: str) -> None:
    with pytest.raises(Rejection, match=message) as info:
        provider.parse(req(query, **form))
    assert info.value.http_status == 400


def test_raw_body_fallback_and_non_form_body() -> None:
    good = req({"callId": "c1", "type": "status"}, CallStatus="ringing")
    raw = WebhookRequest("POST", good.url, good.path, good.query, {}, good.body, ())
    assert provider.parse(raw)[0].type == "call.ringing"
    junk = WebhookRequest("POST", good.url, good.path, good.query, {}, b"\xff\xfe{", ())
    with pytest.raises(Rejection, match="not a form"):
        provider.parse(junk)


def test_ack_never_hangs_up_a_live_call() -> None:
    status = provider.ack(req({"callId": "c1", "type": "status"}, CallStatus="ringing"))
    assert status.body == b'<?xml version="1.0" encoding="UTF-8"?><Response/>'
    voice = provider.ack(req({"callId": "c1", "type": "gather", "token": "t1"}, CallStatus="in-progress"))
    assert voice.content_type == "text/xml"
    assert voice.body.decode() == (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Pause length="1"/><Redirect method="POST">'
        "https://voice.example.com/voice/webhook?callId=c1&amp;type=resume</Redirect></Response>")
