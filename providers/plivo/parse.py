"""Plivo webhooks (form bodies) → provider-neutral events. Pure.

Parameters: reference/protocols.md §5. The query ``type`` says which of our
URLs Plivo called (answer_url ``voice``, ring_url ``status``, hangup_url
``hangup``, GetInput ``gather``, fall-through ``noinput``, keep-alive or
transfer ``resume``, machine_detection_url ``machine``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from voicecall.engine.events import Event
from voicecall.engine.security import Rejection
from voicecall.providers.base import WebhookRequest

# CallStatus → (event, call.ended reason). ``timeout`` is Plivo's ring time-out;
# ``cancel`` means the call was cancelled before answer — by us (DELETE Request).
STATUS_EVENTS: Mapping[str, tuple[str, str | None]] = {
    "queued": ("call.initiated", None),
    "ringing": ("call.ringing", None),
    "early-media": ("call.ringing", None),
    "in-progress": ("call.answered", None),
    "completed": ("call.ended", "completed"),
    "busy": ("call.ended", "busy"),
    "failed": ("call.ended", "failed"),
    "no-answer": ("call.ended", "no-answer"),
    "timeout": ("call.ended", "no-answer"),
    "cancel": ("call.ended", "hangup-bot"),
}
WEBHOOK_TYPES = frozenset({"voice", "status", "gather", "noinput", "resume", "redirect", "hangup", "machine"})
DEFAULT_CONFIDENCE = 0.9            # as for Twilio: a speech result without a score
_UUID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z-]{7,63}$")
_DIGITS_ONLY = re.compile(r"^[1-9][0-9]{1,14}$")


def bad_request(message: str) -> Rejection:
    """A webhook we cannot understand: HTTP 400, never a 500 or a hang-up."""
    return Rejection(400, "bad_request", f"Plivo webhook: {message}")


def form_of(req: WebhookRequest) -> tuple[tuple[str, str], ...]:
    if req.form or not req.body:
        return req.form
    try:
        return tuple(parse_qsl(req.body.decode("utf-8"), keep_blank_values=True, strict_parsing=True))
    except (UnicodeDecodeError, ValueError):
        raise bad_request("body is not a form (application/x-www-form-urlencoded)") from None


def e164(number: str) -> str:
    """Plivo writes numbers without '+' (``14155550100``); we keep E.164. SIP URIs pass through."""
    number = number.strip()
    return f"+{number}" if _DIGITS_ONLY.match(number) else number


def parse(req: WebhookRequest) -> list[Event]:
    form = dict(form_of(req))
    kind = req.q("type") or "voice"
    if kind not in WEBHOOK_TYPES:
        raise bad_request(f"unknown webhook type {kind[:30]!r}")
    uuid = form.get("CallUUID", "")
    if not uuid:
        raise bad_request("CallUUID is missing")
    if not _UUID.match(uuid):
        raise bad_request(f"CallUUID {uuid[:40]!r} is not a Plivo call UUID")
    base: dict[str, Any] = {"call_id": req.q("callId"), "provider_call_id": uuid, "token": req.q("token")}

    if kind == "gather":
        return [_gather(form, base)]
    if kind == "noinput":
        return [Event("gather.timeout", {}, **base)]
    if kind in ("resume", "redirect"):
        return []       # a keep-alive or transfer came back: the runtime sends what is due
    if kind == "machine":
        machine = form.get("Machine", "").lower()
        if machine not in ("true", "false"):
            raise bad_request(f"machine detection callback with Machine {machine[:20]!r} (true or false expected)")
        answered_by = "machine" if machine == "true" else "human"
        return [Event("machine.detected", {"answeredBy": answered_by}, key=f"plivo:{uuid}:machine", **base)]

    status = form.get("CallStatus", "")
    if status not in STATUS_EVENTS:
        raise bad_request(f"unknown CallStatus {status[:30]!r}")
    if kind == "voice" and base["call_id"] is None:
        return _inbound(form, base, status)
    event_type, reason = STATUS_EVENTS[status]
    if kind == "voice" and form.get("Event") == "StartApp" and event_type != "call.ended":
        event_type = "call.answered"        # the answer_url fetch is the answer
    if kind == "hangup" and event_type != "call.ended":
        raise bad_request(f"hangup callback with CallStatus {status!r}")
    data: dict[str, Any] = {}
    if reason:
        data["reason"] = reason
        if form.get("HangupCause"):
            data["hangupCause"] = form["HangupCause"]
        if form.get("Duration", "").isdigit():
            data["duration"] = int(form["Duration"])
    # Lifecycle callbacks dedupe on what they report; document fetches are not events to dedupe.
    key = f"plivo:{uuid}:{kind}:{status}" if kind in ("status", "hangup") else None
    return [Event(event_type, data, key=key, **base)]


def _gather(form: Mapping[str, str], base: dict[str, Any]) -> Event:
    speech = form.get("Speech", "").strip()
    if speech:
        raw = form.get("SpeechConfidenceScore", "")
        try:
            confidence = float(raw) if raw else DEFAULT_CONFIDENCE
        except ValueError:
            raise bad_request(f"SpeechConfidenceScore {raw[:20]!r} is not a number") from None
        if not 0.0 <= confidence <= 1.0:
            raise bad_request(f"SpeechConfidenceScore {raw[:20]!r} is outside 0..1")
        return Event("speech.final", {"text": speech, "confidence": confidence}, **base)
    digits = form.get("Digits", "")
    if digits:
        if not re.fullmatch(r"[0-9*#]{1,64}", digits):
            raise bad_request(f"Digits {digits[:20]!r} are not DTMF digits")
        return Event("dtmf", {"digits": digits}, **base)
    # An action posted with nothing in it (e.g. redirect="false" reporting a time-out).
    return Event("gather.timeout", {}, **base)


def _inbound(form: Mapping[str, str], base: dict[str, Any], status: str) -> list[Event]:
    direction = form.get("Direction", "")
    if direction != "inbound":
        raise bad_request(f"answer request without callId and Direction {direction[:20]!r} (not inbound)")
    if status not in ("ringing", "in-progress", "queued", "early-media"):
        raise bad_request(f"inbound answer request for a call already {status}")
    to = e164(form.get("To", ""))
    if not to:
        raise bad_request("inbound answer request without To")
    return [Event("call.initiated", {"direction": "inbound", "from": e164(form.get("From", "")), "to": to}, **base)]
