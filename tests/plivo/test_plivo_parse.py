"""Plivo callbacks → events: a table of every webhook type and CallStatus,
inbound calls, gather results, and bad requests (400, never a 500)."""

from __future__ import annotations

from typing import Any

import pytest
from plivo_support import UUID, make_settings, request

from voicecall.engine.security import Rejection
from voicecall.providers.plivo import PlivoProvider

BASE = {"CallUUID": UUID, "RequestUUID": "r-1234567", "From": "15550000000", "To": "15550001111",
        "Direction": "outbound"}


def parse(kind: str, token: str | None = None, call_id: str | None = "c1", **form: str) -> list[Any]:
    query = "&".join(f"{k}={v}" for k, v in (("callId", call_id), ("type", kind), ("token", token)) if v)
    return PlivoProvider(make_settings()).parse(request(f"https://h.example/w?{query}", {**BASE, **form}))


@pytest.mark.parametrize(("kind", "form", "event", "data"), [
    ("status", {"CallStatus": "ringing", "Event": "Ring"}, "call.ringing", {}),
    ("voice", {"CallStatus": "in-progress", "Event": "StartApp"}, "call.answered", {}),
    ("voice", {"CallStatus": "ringing", "Event": "StartApp"}, "call.answered", {}),
    ("hangup", {"CallStatus": "completed", "HangupCause": "NORMAL_CLEARING", "Duration": "12"}, "call.ended",
     {"reason": "completed", "hangupCause": "NORMAL_CLEARING", "duration": 12}),
    ("hangup", {"CallStatus": "busy", "HangupCause": "USER_BUSY"}, "call.ended",
     {"reason": "busy", "hangupCause": "USER_BUSY"}),
    ("hangup", {"CallStatus": "no-answer"}, "call.ended", {"reason": "no-answer"}),
    ("hangup", {"CallStatus": "timeout", "HangupCause": "NO_ANSWER"}, "call.ended",
     {"reason": "no-answer", "hangupCause": "NO_ANSWER"}),
    ("hangup", {"CallStatus": "failed"}, "call.ended", {"reason": "failed"}),
    ("hangup", {"CallStatus": "cancel", "HangupCause": "ORIGINATOR_CANCEL"}, "call.ended",
     {"reason": "hangup-bot", "hangupCause": "ORIGINATOR_CANCEL"}),
    ("machine", {"Machine": "true", "Event": "MachineDetection"}, "machine.detected", {"answeredBy": "machine"}),
    ("machine", {"Machine": "false"}, "machine.detected", {"answeredBy": "human"}),
    ("gather", {"InputType": "speech", "Speech": "a table for two", "SpeechConfidenceScore": "0.87", "Digits": ""},
     "speech.final", {"text": "a table for two", "confidence": 0.87}),
    ("gather", {"InputType": "speech", "Speech": "yes", "Digits": ""}, "speech.final",
     {"text": "yes", "confidence": 0.9}),
    ("gather", {"InputType": "dtmf", "Digits": "42", "Speech": ""}, "dtmf", {"digits": "42"}),
    ("gather", {"InputType": "dtmf", "Digits": ""}, "gather.timeout", {}),
    ("noinput", {"CallStatus": "in-progress"}, "gather.timeout", {}),
])
def test_table(kind: str, form: dict[str, str], event: str, data: dict[str, Any]) -> None:
    (e,) = parse(kind, token="t7", **form)
    assert (e.type, dict(e.data)) == (event, data)
    assert e.call_id == "c1" and e.provider_call_id == UUID and e.token == "t7"


def test_keys_make_lifecycle_callbacks_idempotent() -> None:
    (ring,) = parse("status", CallStatus="ringing")
    (end,) = parse("hangup", CallStatus="completed")
    assert ring.key == f"plivo:{UUID}:status:ringing" and end.key == f"plivo:{UUID}:hangup:completed"
    assert parse("hangup", CallStatus="completed")[0].key == end.key
    assert parse("gather", Speech="x")[0].key is None


@pytest.mark.parametrize("kind", ["resume", "redirect"])
def test_keepalive_fetches_carry_no_event(kind: str) -> None:
    assert parse(kind, CallStatus="in-progress") == []


def test_inbound_call_numbers_become_e164() -> None:
    (e,) = parse("voice", call_id=None, CallStatus="ringing", Direction="inbound", From="14155550100",
                 To="14155550199", Event="StartApp")
    assert e.type == "call.initiated" and e.call_id is None and e.provider_call_id == UUID
    assert dict(e.data) == {"direction": "inbound", "from": "+14155550100", "to": "+14155550199"}
    (sip,) = parse("voice", call_id=None, CallStatus="ringing", Direction="inbound", From="sip:alice@x.example",
                   To="14155550199")
    assert sip.data["from"] == "sip:alice@x.example"


@pytest.mark.parametrize(("kind", "form", "message"), [
    ("bogus", {"CallStatus": "ringing"}, "unknown webhook type"),
    ("status", {"CallUUID": ""}, "CallUUID is missing"),
    ("status", {"CallUUID": "not a uuid!"}, "not a Plivo call UUID"),
    ("status", {"CallStatus": "exploded"}, "unknown CallStatus"),
    ("hangup", {"CallStatus": "ringing"}, "hangup callback"),
    ("machine", {"Machine": "maybe"}, "Machine"),
    ("gather", {"Speech": "hi", "SpeechConfidenceScore": "high"}, "not a number"),
    ("gather", {"Speech": "hi", "SpeechConfidenceScore": "7"}, "outside 0..1"),
    ("gather", {"Digits": "1; drop"}, "not DTMF"),
])
def test_bad_requests_are_400(kind: str, form: dict[str, str], message: str) -> None:
    with pytest.raises(Rejection, match=message) as info:
        parse(kind, **form)
    assert info.value.http_status == 400


def test_inbound_without_direction_or_after_the_end() -> None:
    with pytest.raises(Rejection, match="not inbound"):
        parse("voice", call_id=None, CallStatus="ringing")
    with pytest.raises(Rejection, match="already completed"):
        parse("voice", call_id=None, CallStatus="completed", Direction="inbound")


def test_raw_body_without_parsed_form() -> None:
    from voicecall.providers.base import WebhookRequest

    req = WebhookRequest("POST", "https://h.example/w?callId=c1&type=status", "/w",
                         (("callId", "c1"), ("type", "status")), {},
                         f"CallUUID={UUID}&CallStatus=ringing".encode())
    assert PlivoProvider(make_settings()).parse(req)[0].type == "call.ringing"
    bad = WebhookRequest("POST", req.url, "/w", req.query, {}, b"\xff\xfe")
    with pytest.raises(Rejection, match="not a form"):
        PlivoProvider(make_settings()).parse(bad)
