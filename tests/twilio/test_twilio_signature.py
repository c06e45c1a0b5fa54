"""Every vector of reference/protocols.md §1, cross-checked with the SDK's RequestValidator."""

from __future__ import annotations

import hashlib

import pytest
from twilio.request_validator import RequestValidator

from voicecall.engine.errors import SignatureError
from voicecall.providers.base import WebhookRequest
from voicecall.providers.twilio.signature import compute_signature, verify

SUITE_TOKEN = "12345"
SUITE_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
SUITE_PARAMS = (("CallSid", "CA1234567890ABCDE"), ("Digits", "1234"), ("From", "+14158675309"),
                ("To", "+18005551212"), ("Caller", "+14158675309"))
NEW_TOKEN = "0123456789abcdef0123456789abcdef"
STATUS_PARAMS = (("AccountSid", "AC00000000000000000000000000000000"),
                 ("CallSid", "CA11111111111111111111111111111111"), ("CallStatus", "completed"),
                 ("Direction", "outbound-api"), ("From", "+15005550006"), ("To", "+14155551212"),
                 ("CallDuration", "42"), ("ApiVersion", "2010-04-01"))
GATHER_PARAMS = (("CallSid", "CA22222222222222222222222222222222"),
                 ("SpeechResult", "Yes, I'd like to book — café"), ("Confidence", "0.9123"), ("Digits", ""))
GATHER_URL = "https://example.com:8443/twilio/gather?step=2&flow=abc"

COMPUTE = [
    (SUITE_TOKEN, SUITE_URL, SUITE_PARAMS, "HMAC_SHA1", "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
    (SUITE_TOKEN, "https://mycompany.com:443/myapp.php?foo=1&bar=2", SUITE_PARAMS, "HMAC_SHA1",
     "kvajT1Ptam85bY51eRf/AJRuM3w="),
    (SUITE_TOKEN, "http://mycompany.com:80/myapp.php?foo=1&bar=2", SUITE_PARAMS, "HMAC_SHA1",
     "0ZXoZLH/DfblKGATFgpif+LLRf4="),
    (SUITE_TOKEN, "http://mycompany.com:1234/myapp.php?foo=1&bar=2", SUITE_PARAMS, "HMAC_SHA1",
     "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="),
    (SUITE_TOKEN, SUITE_URL, (("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"),
                              ("Digits", "1234"), ("Digits", "1234")), "HMAC_SHA1", "IK+Dwps556ElfBT0I3Rgjkr1wJU="),
    # Twilio's documented example (webhooks security page): same URL, caller +12349013030.
    (SUITE_TOKEN, SUITE_URL, (("CallSid", "CA1234567890ABCDE"), ("Caller", "+12349013030"), ("Digits", "1234"),
                              ("From", "+12349013030"), ("To", "+18005551212")), "HMAC_SHA1",
     "0/KCTR6DLpKmkAf8muzZqo1nDgQ="),
    (NEW_TOKEN, "https://example.com/twilio/status", STATUS_PARAMS, "HMAC_SHA1", "UM0WtAQJfShAWYjftehFLMfYgEM="),
    (NEW_TOKEN, "https://example.com:443/twilio/status", STATUS_PARAMS, "HMAC_SHA1", "0sNJma9+pZWIqmn97fi8LCu6heY="),
    (NEW_TOKEN, "https://example.com/twilio/status", STATUS_PARAMS, "HMAC_SHA256",
     "/s+cP9PB2ZCSFs0C4rMuCNmgQFm64TGHeN9iTIqcWKw="),
    (NEW_TOKEN, GATHER_URL, GATHER_PARAMS, "HMAC_SHA1", "givn9bTarhNC6cEGsvmw/mUkKb8="),
    (NEW_TOKEN, "https://example.com/twilio/gather?step=2&flow=abc", GATHER_PARAMS, "HMAC_SHA1",
     "I4747j6qIdewXoVdAtff8VACulw="),
    (NEW_TOKEN, GATHER_URL, GATHER_PARAMS, "HMAC_SHA256", "z382NQ2R4ZYysq2peY9Sxi71TOOYgp4RuEce/YZ1EZs="),
    (NEW_TOKEN, "https://example.com/twilio/voice", (), "HMAC_SHA1", "UxXLccc1xIjcWihtaZjdJvQyruU="),
    (NEW_TOKEN, "https://example.com:443/twilio/voice", (), "HMAC_SHA1", "ApmkwytvAqtUm10B3svbxri6ooc="),
]


def request(url: str, params: tuple[tuple[str, str], ...], signature: str, *, body: bytes | None = None,
            settings_header: str | None = None) -> WebhookRequest:
    headers = {"x-twilio-signature": signature}
    if settings_header:
        headers["x-twilio-webhooks-signature-settings"] = settings_header
    return WebhookRequest(method="POST", url=url, path="/", query=(), headers=headers,
                          body=b"x" if body is None and params else (body or b""), form=params)


@pytest.mark.parametrize(("token", "url", "params", "algorithm", "expected"), COMPUTE)
def test_compute_matches_vector_and_sdk(token: str, url: str, params: tuple[tuple[str, str], ...],
                                        algorithm: str, expected: str) -> None:
    assert compute_signature(token, url, params, algorithm) == expected
    if len({k for k, _ in params}) == len(params):     # the SDK's plain-dict path
        assert RequestValidator(token).compute_signature(url, dict(params), algorithm) == expected


@pytest.mark.parametrize(("token", "url", "params", "algorithm", "expected"), COMPUTE)
def test_verify_accepts_every_vector(token: str, url: str, params: tuple[tuple[str, str], ...],
                                     algorithm: str, expected: str) -> None:
    header = f"key=sk1,algorithm={algorithm}" if algorithm != "HMAC_SHA1" else None
    key = verify(token, request(url, params, expected, settings_header=header))
    assert len(key) == 64


def test_port_variants_like_the_sdk() -> None:
    # Signed without the port, received on :443 (and the reverse): both accepted.
    verify(SUITE_TOKEN, request("https://mycompany.com:443/myapp.php?foo=1&bar=2", SUITE_PARAMS,
                                "RSOYDt4T1cUTdK1PDd93/VVr8B8="))
    verify(SUITE_TOKEN, request(SUITE_URL, SUITE_PARAMS, "kvajT1Ptam85bY51eRf/AJRuM3w="))
    verify(NEW_TOKEN, request(GATHER_URL, GATHER_PARAMS, "I4747j6qIdewXoVdAtff8VACulw="))


def test_json_body_vectors() -> None:
    body = b'{"property": "value", "boolean": true}'
    digest = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
    assert hashlib.sha256(body).hexdigest() == digest
    url = f"{SUITE_URL}&bodySHA256={digest}"
    verify(SUITE_TOKEN, request(url, (), "a9nBmqA0ju/hNViExpshrM61xv4=", body=body))
    body4 = b'{"CallSid":"CA33333333333333333333333333333333","event":"x"}'
    url4 = ("https://example.com/twilio/json?bodySHA256="
            "57a15f96fae2abc7563e274e6f0853954eeb1aadb6769a5aa884ce1f75642a9d")
    verify(NEW_TOKEN, request(url4, (), "oCSXW0s3h3kLDAibgTGFv3X+S7A=", body=body4))
    assert RequestValidator(NEW_TOKEN).validate(url4, body4.decode(), "oCSXW0s3h3kLDAibgTGFv3X+S7A=")
    with pytest.raises(SignatureError, match="bodySHA256"):
        verify(NEW_TOKEN, request(url4, (), "oCSXW0s3h3kLDAibgTGFv3X+S7A=", body=body4 + b" "))


@pytest.mark.parametrize("mutate", ["url", "param", "extra", "missing", "token", "signature"])
def test_tampering_is_rejected_without_leaking(mutate: str) -> None:
    url, sig, token = SUITE_URL, "RSOYDt4T1cUTdK1PDd93/VVr8B8=", SUITE_TOKEN
    params: tuple[tuple[str, str], ...] = SUITE_PARAMS
    if mutate == "url":
        url = url.replace("foo=1", "foo=2")
    elif mutate == "param":
        params = (("CallSid", "CA1234567890ABCDF"), *params[1:])
    elif mutate == "extra":
        params = (*params, ("Evil", "1"))
    elif mutate == "missing":
        params = params[1:]
    elif mutate == "token":
        token = "54321"
    else:
        sig = sig[:-2] + "A="
    assert not RequestValidator(token).validate(url, dict(params), sig)
    with pytest.raises(SignatureError) as info:
        verify(token, request(url, params, sig))
    assert token not in str(info.value) and sig not in str(info.value)
    assert "foo=" not in str(info.value)       # the query (turn tokens) stays out of logs


def test_missing_header_unknown_algorithm_and_no_token() -> None:
    with pytest.raises(SignatureError, match="missing"):
        verify(SUITE_TOKEN, request(SUITE_URL, SUITE_PARAMS, ""))
    with pytest.raises(SignatureError, match="unsupported"):
        verify(SUITE_TOKEN, request(SUITE_URL, SUITE_PARAMS, "x", settings_header="algorithm=HMAC_MD5"))
    with pytest.raises(SignatureError, match="not configured"):
        verify("", request(SUITE_URL, SUITE_PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8="))


def test_replay_key_is_stable_and_distinct() -> None:
    a = verify(SUITE_TOKEN, request(SUITE_URL, SUITE_PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8="))
    b = verify(SUITE_TOKEN, request(SUITE_URL, tuple(reversed(SUITE_PARAMS)), "RSOYDt4T1cUTdK1PDd93/VVr8B8="))
    c = verify(NEW_TOKEN, request("https://example.com/twilio/voice", (), "UxXLccc1xIjcWihtaZjdJvQyruU="))
    assert a == b != c


def test_unparsed_form_body_is_signed_too() -> None:
    from urllib.parse import urlencode

    body = urlencode(SUITE_PARAMS).encode()
    raw = WebhookRequest("POST", SUITE_URL, "/", (), {"x-twilio-signature": "RSOYDt4T1cUTdK1PDd93/VVr8B8="}, body, ())
    assert verify(SUITE_TOKEN, raw) == verify(SUITE_TOKEN, request(SUITE_URL, SUITE_PARAMS,
                                                                   "RSOYDt4T1cUTdK1PDd93/VVr8B8="))
    junk = WebhookRequest("POST", SUITE_URL, "/", (), {"x-twilio-signature": "x"}, b"\xff{", ())
    with pytest.raises(SignatureError, match="neither a form"):
        verify(SUITE_TOKEN, junk)
