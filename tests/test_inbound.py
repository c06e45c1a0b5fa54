"""Inbound policy: who may call in, and which number route applies."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicecall.engine.config import default_settings
from voicecall.engine.inbound import (
    InboundDecision,
    decide,
    effective_route,
    normalise_e164,
    route_for,
)

ALLOWED = "+15551234567"
ROUTE = {"inboundGreeting": "Support line", "flow": "notify"}


def settings(policy: str, allow: tuple[str, ...] = (ALLOWED,)):  # type: ignore[no-untyped-def]
    return default_settings(inboundPolicy=policy, allowFrom=list(allow),
                            numbers={"+15550009999": ROUTE})


@pytest.mark.parametrize(("text", "expected"), [
    ("+15551234567", "+15551234567"),
    ("+1 (555) 123-4567", "+15551234567"),
    ("  +1.555.123.4567 ", "+15551234567"),
    ("+44 20 7946 0958", "+442079460958"),
    ("5551234567", None),          # national/suffix-only: no country, cannot compare
    ("+1 800 FLOWERS", None),      # letters are refused, not converted
    ("+12", None),                 # too short to be a number
    ("", None),
    (None, None),
    ("anonymous", None),
])
def test_normalise_e164(text: str | None, expected: str | None) -> None:
    assert normalise_e164(text) == expected


@pytest.mark.parametrize(("policy", "caller", "accepted", "reason"), [
    ("disabled", ALLOWED, False, "policy_disabled"),
    ("open", "+15550000001", True, "policy_open"),
    ("open", None, True, "policy_open"),
    ("allowlist", ALLOWED, True, "in_allowlist"),
    ("allowlist", "+1 (555) 123-4567", True, "in_allowlist"),
    ("pairing", ALLOWED, True, "in_allowlist"),
    ("allowlist", "+15551234568", False, "not_in_allowlist"),
    ("allowlist", "5551234567", False, "malformed_caller"),      # suffix of an allowed number
    ("allowlist", "1234567", False, "malformed_caller"),
    ("allowlist", "+4915551234567", False, "not_in_allowlist"),  # allowed number as a suffix
    ("allowlist", "garbage", False, "malformed_caller"),
    ("allowlist", "anonymous", False, "anonymous_caller"),
    ("allowlist", "Restricted", False, "anonymous_caller"),
    ("allowlist", "+266696687", False, "anonymous_caller"),
    ("allowlist", "", False, "anonymous_caller"),
    ("allowlist", None, False, "anonymous_caller"),
    ("pairing", "anonymous", False, "anonymous_caller"),
])
def test_policy(policy: str, caller: str | None, accepted: bool, reason: str) -> None:
    decision = decide(settings(policy), caller, "+15550009999")
    assert (decision.accepted, decision.reason) == (accepted, reason)
    assert decision.route == ROUTE


def test_caller_is_reported_normalised() -> None:
    decision = decide(settings("allowlist"), "+1 (555) 123-4567", None)
    assert decision == InboundDecision(True, "in_allowlist", None, "+15551234567")
    assert decide(settings("allowlist"), "anonymous", None).caller is None


def test_empty_allowlist_refuses_everyone() -> None:
    assert decide(settings("allowlist", ()), ALLOWED, None).reason == "not_in_allowlist"


def test_routes() -> None:
    s = settings("open")
    assert route_for(s, "+15550009999") == ROUTE
    assert route_for(s, "+1 555 000 9999") == ROUTE
    assert route_for(s, "+15550009998") is None
    assert route_for(s, None) is None
    assert route_for(s, "5550009999") is None


def test_decision_is_frozen() -> None:
    decision = decide(settings("open"), ALLOWED, None)
    with pytest.raises(AttributeError):
        decision.accepted = False  # type: ignore[misc]


@given(st.text(max_size=30))
def test_normalise_never_crashes_and_is_stable(text: str) -> None:
    result = normalise_e164(text)
    assert result is None or (result.startswith("+") and normalise_e164(result) == result)


@given(st.one_of(st.none(), st.text(max_size=20)))
def test_allowlist_only_admits_listed_numbers(caller: str | None) -> None:
    decision = decide(settings("allowlist"), caller, None)
    assert decision.accepted == (normalise_e164(caller) == ALLOWED)


def test_effective_route_merges_tts_and_overrides_keys() -> None:
    s = default_settings(inboundGreeting="Main line", responseModel="gpt-4o-mini",
                         tts={"provider": "openai", "openai": {"voice": "coral", "model": "m1"}},
                         numbers={"+15550009999": {"inboundGreeting": "Cards line",
                                                   "tts": {"openai": {"voice": "alloy"}}}})
    view = effective_route(s, route_for(s, "+15550009999"))
    assert view["inboundGreeting"] == "Cards line"
    assert view["responseModel"] == "gpt-4o-mini"
    assert view["flow"] is None
    assert view["tts"] == {"provider": "openai", "openai": {"voice": "alloy", "model": "m1"}}
    assert effective_route(s, None)["inboundGreeting"] == "Main line"
