"""Preflight checks in DESIGN §4 order: exact path, POST, signature headers
present, per-IP in-flight cap."""

from __future__ import annotations

import pytest

from voicecall.engine.errors import SignatureError, VoiceCallError
from voicecall.engine.security import (
    InFlightLimiter,
    Rejection,
    SecurityPolicy,
    check_preflight,
    path_matches,
    required_headers_present,
)

POLICY = SecurityPolicy(webhook_path="/voice/webhook")
TWILIO = ("x-twilio-signature",)
TELNYX = ("telnyx-signature-ed25519", "telnyx-timestamp")
SIG = "RSOYDt4T1cUTdK1PDd93/VVr8B8="


@pytest.mark.parametrize("raw_path", [
    "/voice/webhook",
    "/voice/webhook?callId=c1&type=voice&token=a%2Fb",
    "/voice/webhook?",
])
def test_exact_path_accepted(raw_path: str) -> None:
    assert path_matches(POLICY, raw_path)


@pytest.mark.parametrize("raw_path", [
    "/voice/webhook/../x",
    "/voice/webhook/..",
    "/voice/webhook/",
    "/voice/webhook/.",
    "/voice/./webhook",
    "/Voice/Webhook",
    "/VOICE/WEBHOOK",
    "/voice/webhook%2F",
    "/voice%2Fwebhook",
    "/voice/webhook%20",
    "//voice/webhook",
    "/voice//webhook",
    "/voice/webhook;jsessionid=1",
    "/voice/webhook#frag",
    "/voice/webhookx",
    "/voice/webhoo",
    "/voice/webhook\x00",
    " /voice/webhook",
    "http://example.com/voice/webhook",
    "*",
    "",
    "/",
])
def test_path_lookalikes_refused(raw_path: str) -> None:
    assert not path_matches(POLICY, raw_path)
    with pytest.raises(Rejection) as info:
        check_preflight(POLICY, InFlightLimiter(8), method="POST", raw_path=raw_path,
                        headers={"x-twilio-signature": SIG}, peer="203.0.113.9",
                        required_headers=TWILIO)
    assert (info.value.http_status, info.value.reason) == (404, "not_found")


def test_configured_path_is_the_one_matched() -> None:
    policy = SecurityPolicy(webhook_path="/hooks/twilio")
    assert path_matches(policy, "/hooks/twilio?x=1")
    assert not path_matches(policy, "/voice/webhook")


@pytest.mark.parametrize("method", ["GET", "PUT", "HEAD", "OPTIONS", "DELETE", "post", "Post"])
def test_only_post(method: str) -> None:
    with pytest.raises(Rejection) as info:
        check_preflight(POLICY, InFlightLimiter(8), method=method, raw_path="/voice/webhook",
                        headers={"x-twilio-signature": SIG}, peer="203.0.113.9",
                        required_headers=TWILIO)
    assert (info.value.http_status, info.value.reason) == (405, "method_not_allowed")
    assert info.value.headers == {"Allow": "POST"}


@pytest.mark.parametrize(("headers", "required", "present"), [
    ({"x-twilio-signature": SIG}, TWILIO, True),
    ({}, TWILIO, False),
    ({"x-twilio-signature": ""}, TWILIO, False),
    ({"x-twilio-signature": "   "}, TWILIO, False),
    ({"x-other": SIG}, TWILIO, False),
    ({"telnyx-signature-ed25519": "c2ln", "telnyx-timestamp": "1"}, TELNYX, True),
    ({"telnyx-signature-ed25519": "c2ln"}, TELNYX, False),
    ({"telnyx-timestamp": "1"}, TELNYX, False),
    ({}, (), True),
])
def test_required_headers_present(headers: dict[str, str], required: tuple[str, ...],
                                  present: bool) -> None:
    assert required_headers_present(headers, required) is present


def test_missing_signature_header_is_401_and_takes_no_slot() -> None:
    limiter = InFlightLimiter(8)
    with pytest.raises(Rejection) as info:
        check_preflight(POLICY, limiter, method="POST", raw_path="/voice/webhook",
                        headers={"telnyx-signature-ed25519": "c2lnbmF0dXJl"},
                        peer="203.0.113.9", required_headers=TELNYX)
    rejection = info.value
    assert (rejection.http_status, rejection.reason) == (401, "missing_signature")
    assert "telnyx-timestamp" in rejection.log_message
    assert "c2lnbmF0dXJl" not in rejection.log_message     # never a signature in logs
    assert limiter.in_flight("203.0.113.9") == 0


def test_skip_signature_lets_missing_headers_through() -> None:
    policy = SecurityPolicy(skip_signature=True)
    limiter = InFlightLimiter(8)
    check_preflight(policy, limiter, method="POST", raw_path="/voice/webhook", headers={},
                    peer="203.0.113.9", required_headers=TWILIO)
    assert limiter.in_flight("203.0.113.9") == 1


def test_order_path_then_method_then_headers_then_cap() -> None:
    full = InFlightLimiter(1)
    assert full.try_enter("203.0.113.9")

    def reason(**kw: object) -> str:
        args: dict = {"method": "POST", "raw_path": "/voice/webhook", "headers": {},
                      "peer": "203.0.113.9", "required_headers": TWILIO}
        args.update(kw)
        with pytest.raises(Rejection) as info:
            check_preflight(POLICY, full, **args)
        return info.value.reason

    assert reason(method="GET", raw_path="/nope") == "not_found"
    assert reason(method="GET") == "method_not_allowed"
    assert reason() == "missing_signature"
    assert reason(headers={"x-twilio-signature": SIG}) == "too_many_in_flight"
    assert full.in_flight("203.0.113.9") == 1


def test_preflight_takes_a_slot_the_caller_releases() -> None:
    limiter = InFlightLimiter(2)
    peer = "198.51.100.7"
    for _ in range(2):
        check_preflight(POLICY, limiter, method="POST", raw_path="/voice/webhook",
                        headers={"x-twilio-signature": SIG}, peer=peer, required_headers=TWILIO)
    with pytest.raises(Rejection) as info:
        check_preflight(POLICY, limiter, method="POST", raw_path="/voice/webhook",
                        headers={"x-twilio-signature": SIG}, peer=peer, required_headers=TWILIO)
    assert (info.value.http_status, info.value.reason) == (429, "too_many_in_flight")
    with limiter.leaving(peer):
        pass
    check_preflight(POLICY, limiter, method="POST", raw_path="/voice/webhook",
                    headers={"x-twilio-signature": SIG}, peer=peer, required_headers=TWILIO)


def test_limiter_n_pass_n_plus_one_refused_leave_frees() -> None:
    limiter = InFlightLimiter(8)
    assert all(limiter.try_enter("203.0.113.9") for _ in range(8))
    assert not limiter.try_enter("203.0.113.9")
    assert limiter.try_enter("203.0.113.10")          # other clients unaffected
    limiter.leave("203.0.113.9")
    assert limiter.try_enter("203.0.113.9")
    assert not limiter.try_enter("203.0.113.9")
    for _ in range(8):
        limiter.leave("203.0.113.9")
    assert limiter.in_flight("203.0.113.9") == 0


def test_limiter_buckets() -> None:
    limiter = InFlightLimiter(2)
    assert limiter.try_enter("203.0.113.9")
    assert limiter.try_enter("::ffff:203.0.113.9")     # IPv4-mapped is the same client
    assert not limiter.try_enter("203.0.113.9")
    assert limiter.try_enter("2001:db8:1:2::1")
    assert limiter.try_enter("2001:db8:1:2::ffff")     # same /64
    assert not limiter.try_enter("2001:db8:1:2:abcd::1")
    assert limiter.try_enter("2001:db8:1:3::1")        # next /64
    assert limiter.try_enter("::1") and limiter.try_enter("::1")
    assert not limiter.try_enter("::1")


def test_limiter_leave_without_enter_is_a_bug() -> None:
    limiter = InFlightLimiter(1)
    with pytest.raises(RuntimeError, match="without enter"):
        limiter.leave("203.0.113.9")
    with pytest.raises(ValueError):
        InFlightLimiter(0)


def test_limiter_context_managers_release_on_error() -> None:
    limiter = InFlightLimiter(1)
    with pytest.raises(KeyError), limiter.slot("203.0.113.9"):
        assert limiter.in_flight("203.0.113.9") == 1
        with pytest.raises(Rejection) as info, limiter.slot("203.0.113.9"):
            pass
        assert info.value.http_status == 429
        raise KeyError("handler failed")
    assert limiter.in_flight("203.0.113.9") == 0
    assert limiter.try_enter("203.0.113.9")
    with pytest.raises(KeyError), limiter.leaving("203.0.113.9"):
        raise KeyError("handler failed")
    assert limiter.in_flight("203.0.113.9") == 0


def test_rejection_log_message_is_escaped_and_bounded() -> None:
    with pytest.raises(Rejection) as info:
        check_preflight(POLICY, InFlightLimiter(8), method="POST",
                        raw_path="/x\r\nFAKE LOG LINE" + "a" * 500, headers={},
                        peer="203.0.113.9", required_headers=TWILIO)
    message = info.value.log_message
    assert "\n" not in message and "\r" not in message
    assert len(message) < 300
    assert isinstance(info.value, VoiceCallError)
    assert info.value.code == "not_found"


def test_bad_signature_rejection() -> None:
    rejection = Rejection.bad_signature(SignatureError("signature does not match"), "10.0.0.1")
    assert (rejection.http_status, rejection.reason) == (401, "bad_signature")
    assert "does not match" in rejection.log_message and "10.0.0.1" in rejection.log_message
