"""Inbound policy and number routes: who may call in, and how the dialed number
is handled.

OpenClaw's allowlist strips non-digits and compares exactly (a "low-assurance
caller-ID screen"). We compare normalised E.164 (``phonenumbers``), so
``+1 (555) 123-4567`` equals ``+15551234567``, and refuse callers that cannot
be compared: anonymous, malformed, or national/suffix-only numbers (no ``+``),
which would otherwise let ``5551234567`` match by accident.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# What carriers send for a withheld caller ID. +266696687 is the Lesotho number
# Twilio substitutes for anonymous callers; "Restricted"/"Anonymous" come from
# Plivo and Telnyx (case varies).
ANONYMOUS = frozenset({
    "anonymous", "restricted", "private", "unknown", "unavailable", "blocked",
    "+266696687", "266696687", "client:anonymous",
})

# Only characters people use to format a phone number; letters (vanity numbers)
# are refused rather than converted, since a caller ID is never spelled.
_FORMATTED = re.compile(r"^\+[0-9\s().\-/]+$")


@dataclass(frozen=True, slots=True)
class InboundDecision:
    """Whether to take an inbound call, why, and the matching number route."""

    accepted: bool
    reason: str                      # "accepted", "policy_open", "policy_disabled", ...
    route: Mapping[str, Any] | None  # numbers[<dialed E.164>], or None
    caller: str | None               # the caller in E.164, when it parses


def normalise_e164(text: str | None) -> str | None:
    """``"+1 (555) 123-4567"`` → ``"+15551234567"``; None when not a possible
    international number (empty, no leading ``+``, letters, wrong length)."""
    if text is None:
        return None
    text = str(text).strip()
    if not _FORMATTED.match(text):
        return None
    import phonenumbers

    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def is_anonymous(text: str | None) -> bool:
    """True for a withheld caller ID (None, empty, or a carrier's anonymous marker)."""
    if text is None:
        return True
    cleaned = str(text).strip().lower()
    return not cleaned or cleaned in ANONYMOUS or cleaned.lstrip("+") == "266696687"


def _settings_value(settings: Any, key: str, default: Any) -> Any:
    data = getattr(settings, "data", settings)
    return data.get(key, default) if isinstance(data, Mapping) else default


def route_for(settings: Any, dialed: str | None) -> Mapping[str, Any] | None:
    """The ``numbers`` entry for the dialed number (compared as E.164), or None."""
    wanted = normalise_e164(dialed)
    if wanted is None:
        return None
    numbers = _settings_value(settings, "numbers", {}) or {}
    if wanted in numbers:
        return numbers[wanted]
    for key, route in numbers.items():
        if normalise_e164(key) == wanted:
            return route
    return None


ROUTE_KEYS = ("inboundGreeting", "agentId", "responseModel", "responseSystemPrompt",
              "responseTimeoutMs", "flow")


def effective_route(settings: Any, route: Mapping[str, Any] | None) -> dict[str, Any]:
    """The per-call view of a number route: each route key replaces the global
    one (``flow`` is None when neither sets it) and the route's ``tts``
    deep-merges over the global ``tts`` (DESIGN §2 ``numbers``)."""
    from voicecall.engine.config.settings import deep_merge, thaw

    route = route or {}
    out = {key: thaw(route[key]) if key in route else thaw(_settings_value(settings, key, None))
           for key in ROUTE_KEYS}
    out["tts"] = deep_merge(_settings_value(settings, "tts", {}) or {}, route.get("tts") or {})
    return out


def decide(settings: Any, from_number: str | None, to_number: str | None) -> InboundDecision:
    """Apply ``inboundPolicy`` to a caller. Pure: no I/O, no clock.

    ``disabled`` refuses everything; ``open`` takes everyone (even anonymous:
    open means open); ``allowlist`` and ``pairing`` (the same, as in OpenClaw)
    take only callers whose E.164 number is in ``allowFrom``.
    """
    policy = str(_settings_value(settings, "inboundPolicy", "disabled"))
    route = route_for(settings, to_number)
    caller = None if is_anonymous(from_number) else normalise_e164(from_number)
    if policy == "open":
        return InboundDecision(True, "policy_open", route, caller)
    if policy not in ("allowlist", "pairing"):
        return InboundDecision(False, "policy_disabled", route, caller)
    if is_anonymous(from_number):
        return InboundDecision(False, "anonymous_caller", route, None)
    if caller is None:
        return InboundDecision(False, "malformed_caller", route, None)
    allowed = {normalise_e164(entry) for entry in _settings_value(settings, "allowFrom", ())}
    allowed.discard(None)
    if caller in allowed:
        return InboundDecision(True, "in_allowlist", route, caller)
    return InboundDecision(False, "not_in_allowlist", route, caller)
