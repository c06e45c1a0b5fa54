"""Telnyx Call Control webhooks (JSON events) → provider-neutral events. Pure.

Envelope: reference/protocols.md §4. Our call id and the step's tag or turn
token ride in ``client_state`` (base64 of compact JSON, set by every command
we send); Telnyx echoes it in later events. The body is what Telnyx signs,
so ``client_state`` is trusted and the (unsigned) query string is not.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from voicecall.engine.events import Event
from voicecall.engine.security import Rejection
from voicecall.providers.base import WebhookRequest

CLIENT_STATE_LIMIT = 4096      # Telnyx refuses a longer client_state

# Telnyx hangup_cause → our terminal state names (reference/openclaw-behaviour.md §4.2).
HANGUP_CAUSES: Mapping[str, str] = {
    "normal_clearing": "completed",
    "normal_unspecified": "completed",
    "unspecified": "completed",
    "originator_cancel": "hangup-bot",
    "call_rejected": "busy",
    "user_busy": "busy",
    "timeout": "no-answer",
    "no_answer": "no-answer",
    "no_user_response": "no-answer",
    "time_limit": "timeout",
    "not_found": "failed",
    "unallocated_number": "failed",
    "destination_out_of_order": "failed",
    "network_out_of_order": "failed",
    "service_unavailable": "failed",
    "recovery_on_timer_expire": "failed",
    "machine_detected": "voicemail",
    "fax_detected": "voicemail",
    "user_hangup": "hangup-user",
    "subscriber_absent": "hangup-user",
}
UNKNOWN_CAUSE = "completed"     # as the reference plugin: an unknown cause is a normal end
# call.machine.detection.ended result (and the premium variant) → answeredBy.
MACHINE_RESULTS: Mapping[str, str] = {
    "human": "human", "human_residence": "human", "human_business": "human",
    "machine": "machine", "fax_detected": "fax", "silence": "unknown", "not_sure": "unknown",
}
# client_state "k": what the command that set it was.
KIND_LIFECYCLE, KIND_PLAYBACK, KIND_PROMPT, KIND_GATHER = "a", "s", "p", "g"
# Events we know and deliberately turn into nothing (the engine needs none of them).
IGNORED = frozenset({
    "call.speak.started", "call.playback.started", "call.bridged", "call.dtmf.received",
    "call.machine.greeting.ended", "call.machine.premium.greeting.ended", "call.recording.saved",
    "streaming.started", "streaming.stopped", "streaming.failed", "call.fork.started", "call.fork.stopped",
    "call.enqueued", "call.left_queue", "call.refer.started", "call.refer.completed", "call.refer.failed",
    "call.cost", "call.conversation.ended", "call.ai_gather.ended", "call.ai_gather.partial_results",
})


def bad_request(message: str) -> Rejection:
    """A webhook we cannot read: HTTP 400 (Telnyx logs it), never a 500."""
    return Rejection(400, "bad_request", f"Telnyx webhook: {message}")


def encode_state(call_id: str, tag: str | None = None, kind: str = KIND_LIFECYCLE) -> str:
    """``client_state`` for a command: base64 of ``{"c": call id, "k": kind, "t": tag}``."""
    state: dict[str, str] = {"c": call_id, "k": kind}
    if tag:
        state["t"] = tag
    encoded = base64.b64encode(json.dumps(state, separators=(",", ":"), sort_keys=True).encode()).decode("ascii")
    if len(encoded) > CLIENT_STATE_LIMIT:
        raise ValueError(f"client_state would be {len(encoded)} characters (Telnyx allows {CLIENT_STATE_LIMIT})")
    return encoded


def decode_state(raw: Any) -> dict[str, str]:
    """Our ``client_state`` back; ``{}`` for none or one we did not write (never an error:
    an inbound call carries none until we answer it)."""
    if not isinstance(raw, str) or not raw or len(raw) > CLIENT_STATE_LIMIT:
        return {}
    try:
        value = json.loads(base64.b64decode(raw, validate=True))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(value, dict) or not isinstance(value.get("c"), str) or not value["c"]:
        return {}
    return {k: v for k, v in value.items() if k in ("c", "k", "t") and isinstance(v, str)}


def envelope(body: bytes) -> tuple[str, str, dict[str, Any]]:
    """``(event_type, event id, payload)`` of a Telnyx event body; Rejection when unreadable."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise bad_request("body is not JSON") from None
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, dict):
        raise bad_request("body has no 'data' object")
    event_type, event_id, payload = data.get("event_type"), data.get("id"), data.get("payload")
    if not isinstance(event_type, str) or not event_type:
        raise bad_request("data.event_type is missing")
    if not isinstance(event_id, str) or not event_id:
        raise bad_request(f"{event_type[:40]}: data.id is missing")
    if not isinstance(payload, dict):
        raise bad_request(f"{event_type[:40]}: data.payload is not an object")
    return event_type, event_id, payload


def parse(req: WebhookRequest) -> list[Event]:
    event_type, event_id, payload = envelope(req.body)
    if event_type in IGNORED or not event_type.startswith("call."):
        return []
    ccid = payload.get("call_control_id")
    if not isinstance(ccid, str) or not ccid:
        raise bad_request(f"{event_type[:40]} without call_control_id")
    state = decode_state(payload.get("client_state"))
    kind, tag = state.get("k"), state.get("t")
    base: dict[str, Any] = {"call_id": state.get("c"), "provider_call_id": ccid, "key": f"telnyx:{event_id}"}

    if event_type == "call.initiated":
        return [_initiated(payload, base)]
    if event_type == "call.answered":
        return [Event("call.answered", {}, **base)]
    if event_type == "call.hangup":
        return [_hangup(payload, base)]
    if event_type in ("call.speak.ended", "call.playback.ended"):
        if kind not in (KIND_PLAYBACK, KIND_PROMPT) or not tag:
            return []
        data: dict[str, Any] = {"status": str(payload.get("status") or "completed")}
        if kind == KIND_PROMPT:
            data["prompt"] = True        # a gather's prompt: ``token`` is the turn token
        return [Event("playback.done", data, token=tag, **base)]
    if event_type == "call.gather.ended":
        return _gather(payload, base, tag if kind == KIND_GATHER else None)
    if event_type == "call.transcription":
        return _transcription(payload, base, tag if kind == KIND_GATHER else None)
    if event_type in ("call.machine.detection.ended", "call.machine.premium.detection.ended"):
        result = str(payload.get("result") or "")
        if result not in MACHINE_RESULTS:
            raise bad_request(f"{event_type}: unknown result {result[:30]!r}")
        return [Event("machine.detected", {"answeredBy": MACHINE_RESULTS[result]}, **base)]
    return []       # call.* events Telnyx adds later: acknowledged, not retried forever


def _initiated(payload: Mapping[str, Any], base: dict[str, Any]) -> Event:
    direction = payload.get("direction")
    if direction == "incoming":
        to, from_ = payload.get("to"), payload.get("from")
        if not isinstance(to, str) or not to:
            raise bad_request("incoming call.initiated without 'to'")
        return Event("call.initiated", {"direction": "inbound", "from": str(from_ or ""), "to": to}, **base)
    if direction != "outgoing":
        raise bad_request(f"call.initiated with direction {str(direction)[:20]!r} (incoming or outgoing)")
    return Event("call.initiated", {"direction": "outbound"}, **base)


def _hangup(payload: Mapping[str, Any], base: dict[str, Any]) -> Event:
    cause = str(payload.get("hangup_cause") or "unspecified")
    reason = HANGUP_CAUSES.get(cause, UNKNOWN_CAUSE)
    if cause == "originator_cancel" and base["call_id"] is None:
        # We never touched the call (no client_state of ours): the caller of an inbound
        # call gave up ringing. Ours (an outbound dial, an answered call) always carry one.
        reason = "hangup-user"
    data: dict[str, Any] = {"reason": reason, "cause": cause}
    for field, name in (("hangup_source", "source"), ("sip_hangup_cause", "sipCode")):
        value = payload.get(field)
        if isinstance(value, str) and value and value != "unspecified":
            data[name] = value
    return Event("call.ended", data, **base)


def _gather(payload: Mapping[str, Any], base: dict[str, Any], token: str | None) -> list[Event]:
    status = str(payload.get("status") or "")
    digits = payload.get("digits")
    digits = digits if isinstance(digits, str) else ""
    if status in ("call_hangup", "cancelled", "cancelled_amd"):
        return []           # the call ended or we stopped the gather: no turn result
    if status not in ("valid", "invalid", "timeout"):
        raise bad_request(f"call.gather.ended with unknown status {status[:30]!r}")
    if digits:
        # Like Twilio, digits typed before a time-out are the caller's answer.
        return [Event("dtmf", {"digits": digits}, token=token, **base)]
    return [Event("gather.timeout", {}, token=token, **base)]


def _transcription(payload: Mapping[str, Any], base: dict[str, Any], token: str | None) -> list[Event]:
    data = payload.get("transcription_data")
    if not isinstance(data, dict):
        raise bad_request("call.transcription without transcription_data")
    text = str(data.get("transcript") or "").strip()
    if not text:
        return []
    if data.get("is_final") is not True:
        return [Event("speech.partial", {"text": text}, token=token, **base)]
    raw = data.get("confidence", 1.0)
    if not isinstance(raw, int | float) or isinstance(raw, bool):
        raise bad_request(f"call.transcription confidence {str(raw)[:20]!r} is not a number")
    return [Event("speech.final", {"text": text, "confidence": float(raw)}, token=token, **base)]
