"""Twilio webhooks (form bodies) → provider-neutral events. Pure.

Parameters: reference/protocols.md §2. ``CallStatus`` maps onto the lifecycle
events; gather results carry the turn token from our own query string.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from voicecall.engine.events import Event
from voicecall.engine.security import Rejection
from voicecall.providers.base import WebhookRequest

# CallStatus → (event type, call.ended reason). canceled means we hung up a
# ringing call (Status=canceled/completed before answer): that is our hang-up.
STATUS_EVENTS: Mapping[str, tuple[str, str | None]] = {
    "queued": ("call.initiated", None),
    "initiated": ("call.initiated", None),
    "ringing": ("call.ringing", None),
    "in-progress": ("call.answered", None),
    "completed": ("call.ended", "completed"),
    "busy": ("call.ended", "busy"),
    "failed": ("call.ended", "failed"),
    "no-answer": ("call.ended", "no-answer"),
    "canceled": ("call.ended", "hangup-bot"),
}
WEBHOOK_TYPES = frozenset({"voice", "status", "gather", "noinput", "resume", "redirect", "machine"})
# Twilio omits Confidence on some speech results; the reference implementation assumes 0.9.
DEFAULT_CONFIDENCE = 0.9
_SID = re.compile(r"^[A-Za-z]{2}[0-9A-Za-z]{1,62}$")


def bad_request(message: str) -> Rejection:
    """A webhook we cannot understand: HTTP 400, never a 500 or a hang-up."""
    return Rejection(400, "bad_request", f"Twilio webhook: {message}")


def form_of(req: WebhookRequest) -> tuple[tuple[str, str], ...]:
    """The form fields (the server parses them; a raw body is parsed here as a fallback)."""
    if req.form or not req.body:
        return req.form
    try:
        return tuple(parse_qsl(req.body.decode("utf-8"), keep_blank_values=True, strict_parsing=True))
    except (UnicodeDecodeError, ValueError):
        raise bad_request("body is not a form (application/x-www-form-urlencoded)") from None


def parse(req: WebhookRequest) -> list[Event]:
    form = dict(form_of(req))
    kind = req.q("type") or "voice"
    if kind not in WEBHOOK_TYPES:
        raise bad_request(f"unknown webhook type {kind[:30]!r}")
    sid = form.get("CallSid", "")
    if not sid:
        raise bad_request("CallSid is missing")
    if not _SID.match(sid):
        raise bad_request(f"CallSid {sid[:40]!r} is not a Twilio call SID")
    base: dict[str, Any] = {"call_id": req.q("callId"), "provider_call_id": sid, "token": req.q("token")}

    if kind == "gather":
        return [_gather(form, base)]
    if kind == "noinput":
        return [Event("gather.timeout", {}, **base)]
    if kind in ("resume", "redirect"):
        return []     # a keep-alive or redirect came back: nothing happened, the runtime sends what is due
    if kind == "machine":
        amd = form.get("AnsweredBy", "")
        if not amd:
            raise bad_request("AMD callback without AnsweredBy")
        return [Event("machine.detected", {"answeredBy": amd}, **base)]

    status = form.get("CallStatus", "")
    if status not in STATUS_EVENTS:
        raise bad_request(f"unknown CallStatus {status[:30]!r}")
    seq = _seq(form.get("SequenceNumber"))
    if kind == "voice" and base["call_id"] is None:
        return _inbound(form, base, status)

    event_type, reason = STATUS_EVENTS[status]
    data: dict[str, Any] = {}
    if reason:
        data["reason"] = reason
        if form.get("CallDuration", "").isdigit():
            data["duration"] = int(form["CallDuration"])
        if form.get("SipResponseCode"):
            data["sipCode"] = form["SipResponseCode"]
    answered_by = form.get("AnsweredBy", "")
    if event_type == "call.answered" and answered_by:
        data["answeredBy"] = answered_by
    key = f"twilio:{sid}:{status}:{form.get('SequenceNumber', '')}" if kind == "status" else None
    events = [Event(event_type, data, key=key, seq=seq, **base)]
    if answered_by and answered_by.startswith(("machine", "fax")):
        events.append(Event("machine.detected", {"answeredBy": answered_by}, **base))
    return events


def _gather(form: Mapping[str, str], base: dict[str, Any]) -> Event:
    speech = form.get("SpeechResult", "")
    if speech:
        raw = form.get("Confidence", "")
        try:
            confidence = float(raw) if raw else DEFAULT_CONFIDENCE
        except ValueError:
            raise bad_request(f"Confidence {raw[:20]!r} is not a number") from None
        return Event("speech.final", {"text": speech, "confidence": confidence}, **base)
    digits = form.get("Digits", "")
    if digits:
        return Event("dtmf", {"digits": digits}, **base)
    # Only with actionOnEmptyResult does Twilio post an empty result; it is a time-out.
    return Event("gather.timeout", {}, **base)


def _inbound(form: Mapping[str, str], base: dict[str, Any], status: str) -> list[Event]:
    direction = form.get("Direction", "")
    if direction != "inbound":
        raise bad_request(f"voice request without callId and Direction {direction[:20]!r} (not inbound)")
    if status not in ("ringing", "in-progress", "queued", "initiated"):
        raise bad_request(f"inbound voice request for a call already {status}")
    data = {"direction": "inbound", "from": form.get("From", ""), "to": form.get("To", "")}
    if not data["to"]:
        raise bad_request("inbound voice request without To")
    return [Event("call.initiated", data, **base)]


def _seq(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    if not raw.isdigit():
        raise bad_request(f"SequenceNumber {raw[:20]!r} is not a whole number")
    return int(raw)
