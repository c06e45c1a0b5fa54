"""Telnyx events → neutral events: every event type, every hangup cause,
client_state round trip, and the envelopes we refuse."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from typing import Any

import pytest
from telnyx_support import request

from voicecall.engine.events import TERMINAL_STATES
from voicecall.engine.security import Rejection
from voicecall.providers.telnyx.parse import (
    HANGUP_CAUSES,
    KIND_GATHER,
    KIND_PLAYBACK,
    KIND_PROMPT,
    decode_state,
    encode_state,
    parse,
)

CCID = "v3:abc123"


def body(event_type: str, *, state: str | None = None, event_id: str = "ev-1", **payload: Any) -> bytes:
    fields: dict[str, Any] = {"call_control_id": CCID, "from": "+15550003000", "to": "+15550001000", **payload}
    if state is not None:
        fields["client_state"] = state
    return json.dumps({"data": {"record_type": "event", "event_type": event_type, "id": event_id,
                                "occurred_at": "2026-11-22T00:00:00.000000Z", "payload": fields},
                       "meta": {"attempt": 1}}).encode()


def events(raw: bytes) -> list[tuple[str, dict[str, Any], str | None, str | None]]:
    return [(e.type, dict(e.data), e.call_id, e.token) for e in parse(request(raw, {}))]


LIFE = encode_state("call-1")
SAY = encode_state("call-1", "tag-1", KIND_PLAYBACK)
PROMPT = encode_state("call-1", "turn-1", KIND_PROMPT)
TURN = encode_state("call-1", "turn-1", KIND_GATHER)


@pytest.mark.parametrize("raw, expected", [
    (body("call.initiated", direction="incoming"),
     [("call.initiated", {"direction": "inbound", "from": "+15550003000", "to": "+15550001000"}, None, None)]),
    (body("call.initiated", state=LIFE, direction="outgoing"),
     [("call.initiated", {"direction": "outbound"}, "call-1", None)]),
    (body("call.answered", state=LIFE), [("call.answered", {}, "call-1", None)]),
    (body("call.speak.ended", state=SAY, status="completed"),
     [("playback.done", {"status": "completed"}, "call-1", "tag-1")]),
    (body("call.playback.ended", state=SAY, status="completed"),
     [("playback.done", {"status": "completed"}, "call-1", "tag-1")]),
    (body("call.speak.ended", state=PROMPT, status="completed"),
     [("playback.done", {"status": "completed", "prompt": True}, "call-1", "turn-1")]),
    (body("call.speak.ended", state=LIFE, status="completed"), []),
    (body("call.speak.started", state=SAY), []),
    (body("call.gather.ended", state=TURN, digits="12", status="valid"),
     [("dtmf", {"digits": "12"}, "call-1", "turn-1")]),
    (body("call.gather.ended", state=TURN, digits="7", status="timeout"),
     [("dtmf", {"digits": "7"}, "call-1", "turn-1")]),
    (body("call.gather.ended", state=TURN, digits="", status="timeout"),
     [("gather.timeout", {}, "call-1", "turn-1")]),
    (body("call.gather.ended", state=TURN, digits="", status="cancelled"), []),
    (body("call.gather.ended", state=TURN, digits="", status="call_hangup"), []),
    (body("call.transcription", state=TURN, transcription_data={
        "transcript": "a table for two", "confidence": 0.87, "is_final": True}),
     [("speech.final", {"text": "a table for two", "confidence": 0.87}, "call-1", "turn-1")]),
    (body("call.transcription", state=TURN, transcription_data={"transcript": "a tab", "is_final": False}),
     [("speech.partial", {"text": "a tab"}, "call-1", "turn-1")]),
    (body("call.transcription", state=TURN, transcription_data={"transcript": "  ", "is_final": True}), []),
    (body("call.dtmf.received", state=TURN, digit="1"), []),
    (body("call.machine.detection.ended", state=LIFE, result="machine"),
     [("machine.detected", {"answeredBy": "machine"}, "call-1", None)]),
    (body("call.machine.detection.ended", state=LIFE, result="not_sure"),
     [("machine.detected", {"answeredBy": "unknown"}, "call-1", None)]),
    (body("call.machine.premium.detection.ended", state=LIFE, result="human_business"),
     [("machine.detected", {"answeredBy": "human"}, "call-1", None)]),
    (body("call.bridged", state=LIFE), []),
    (body("call.some.future.event", state=LIFE), []),
    (body("streaming.started", state=LIFE), []),
])
def test_event_table(raw: bytes, expected: list[Any]) -> None:
    assert events(raw) == expected


@pytest.mark.parametrize("cause", sorted(HANGUP_CAUSES))
def test_every_hangup_cause_maps_to_a_terminal_state(cause: str) -> None:
    (event,) = parse(request(body("call.hangup", state=LIFE, hangup_cause=cause, hangup_source="callee",
                                  sip_hangup_cause="486"), {}))
    assert event.type == "call.ended" and event.call_id == "call-1" and event.provider_call_id == CCID
    assert event.data == {"reason": HANGUP_CAUSES[cause], "cause": cause, "source": "callee", "sipCode": "486"}
    assert event.data["reason"] in TERMINAL_STATES


@pytest.mark.parametrize("cause, reason", [
    ("normal_clearing", "completed"), ("originator_cancel", "hangup-bot"), ("user_busy", "busy"),
    ("call_rejected", "busy"), ("timeout", "no-answer"), ("no_answer", "no-answer"), ("time_limit", "timeout"),
    ("destination_out_of_order", "failed"), ("machine_detected", "voicemail"), ("user_hangup", "hangup-user"),
    ("something_new", "completed"),
])
def test_hangup_causes(cause: str, reason: str) -> None:
    (event,) = parse(request(body("call.hangup", state=LIFE, hangup_cause=cause, sip_hangup_cause="unspecified"), {}))
    assert event.data["reason"] == reason and "sipCode" not in event.data


def test_a_cancel_on_a_call_we_never_touched_is_the_callers() -> None:
    (ours,) = parse(request(body("call.hangup", state=LIFE, hangup_cause="originator_cancel"), {}))
    (theirs,) = parse(request(body("call.hangup", hangup_cause="originator_cancel", hangup_source="caller"), {}))
    assert (ours.data["reason"], theirs.data["reason"]) == ("hangup-bot", "hangup-user")


def test_event_key_is_the_telnyx_event_id() -> None:
    (event,) = parse(request(body("call.answered", state=LIFE, event_id="0ccc7b54"), {}))
    assert event.key == "telnyx:0ccc7b54"


def test_client_state_round_trip_and_foreign_states() -> None:
    assert decode_state(encode_state("c-1", "t-1", KIND_GATHER)) == {"c": "c-1", "t": "t-1", "k": "g"}
    assert decode_state(base64.b64encode(b'{"flow":"demo"}').decode()) == {}
    assert decode_state("not base64!") == {}
    assert decode_state(None) == {}
    with pytest.raises(ValueError, match="4096"):
        encode_state("c" * 4000)


def test_the_query_string_does_not_choose_the_call() -> None:
    raw = body("call.answered", state=LIFE)
    req = replace(request(raw, {}, url="https://example.com/voice/webhook?callId=someone-else&type=event"),
                  query=(("callId", "someone-else"), ("type", "event")))
    assert parse(req)[0].call_id == "call-1"


@pytest.mark.parametrize("raw, words", [
    (b"not json", "not JSON"),
    (b"[]", "no 'data'"),
    (json.dumps({"data": {"id": "x", "payload": {}}}).encode(), "event_type is missing"),
    (json.dumps({"data": {"event_type": "call.answered", "payload": {}}}).encode(), "data.id is missing"),
    (json.dumps({"data": {"event_type": "call.answered", "id": "x", "payload": []}}).encode(), "not an object"),
    (json.dumps({"data": {"event_type": "call.answered", "id": "x", "payload": {}}}).encode(),
     "without call_control_id"),
    (body("call.initiated", direction="sideways"), "direction"),
    (body("call.initiated", direction="incoming", to=""), "without 'to'"),
    (body("call.gather.ended", state=TURN, status="exploded"), "unknown status"),
    (body("call.transcription", state=TURN), "without transcription_data"),
    (body("call.transcription", state=TURN, transcription_data={"transcript": "x", "is_final": True,
                                                                "confidence": "high"}), "not a number"),
    (body("call.machine.detection.ended", state=LIFE, result="robot"), "unknown result"),
])
def test_unreadable_webhooks_are_400(raw: bytes, words: str) -> None:
    with pytest.raises(Rejection, match=words) as info:
        parse(request(raw, {}))
    assert info.value.http_status == 400
