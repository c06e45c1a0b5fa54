"""Plivo V3 and V2 signatures: every vector of reference/protocols.md §5, the
SDK as an oracle, forged, missing and replayed requests."""

from __future__ import annotations

import pytest
from plivo.utils import validate_signature, validate_v3_signature
from plivo_support import TOKEN, make_settings, request

from voicecall.engine.errors import SignatureError
from voicecall.providers.plivo import PlivoProvider
from voicecall.providers.plivo import signature as sig

GO_NONCE = "31627761595286130198"
GO_TOKEN = "Y2Q2ZDgxZmY5YWRiOTI5YmQ1Njg0MTAxZWIyOTc4"
GO_UUID = "3e82ae9d-2c78-4d85-b1a4-6eae7dbafb36"
GO_PARAMS = {
    "Direction": "outbound", "From": "19792014278", "ALegUUID": GO_UUID, "CallStatus": "in-progress",
    "BillRate": "0.002", "ParentAuthID": "MANWVLYTK4ZWU1YTY4QA",
    "To": "sip:PlivoSignature382029104058171078704104@phone-qa.voice.plivodev.com",
    "ALegRequestUUID": GO_UUID, "CallUUID": GO_UUID, "RequestUUID": GO_UUID,
    "SIP-H-To": "<sip:PlivoSignature382029104058171078704104@52.9.11.55;transport=udp>;tag=1",
    "SessionStart": "2020-04-08 11:34:33.238707", "Event": "StartApp",
}
GO_URL = "https://plivobin.non-prod.plivops.com/api/v1/validate_signature03.xml"
# plivo-go utils_test.go TestValidateSignatureV3Pass1..4, re-verified with the Python SDK.
GO_VECTORS = [
    ("POST", GO_URL + "/?a=b&c=d", "k7Pusd4OxCIjR5IfA9iedDNu/h/gbdYqdzG/MiYtd1c="),
    ("GET", GO_URL + "/?a=b&c=d", "UBq8jAtd32wR8EK9VgxbBn4n5rpI/l1H9iN4WfSEHFQ="),
    ("POST", GO_URL, "iAjE5QqI37mbkYe4w3jTMudqEzbDufdqi7sYwTu64e0="),
    ("GET", GO_URL, "i/MQsaQSAd6fiKhOh2qeeeLHZ9faldADSb3/7+Akfbc="),
]
ANSWER = {"CallUUID": "d0a87a1a-b0e9-4ab2-ac07-c22ee87cd04a", "From": "14155550100", "To": "14155550199",
          "Direction": "outbound", "CallStatus": "in-progress", "Event": "StartApp"}
GETINPUT = {"CallUUID": "d0a87a1a-b0e9-4ab2-ac07-c22ee87cd04a", "InputType": "speech", "Speech": "yes please",
            "SpeechConfidenceScore": "0.92", "Digits": "", "From": "14155550100", "To": "14155550199"}
# The new vectors (SDK-computed), token TOKEN: method, url, nonce, params, string to sign, signature.
NEW_VECTORS = [
    ("POST", "https://example.com/plivo/answer", "05429567804466091622", ANSWER,
     "https://example.com/plivo/answer?CallStatusin-progressCallUUIDd0a87a1a-b0e9-4ab2-ac07-c22ee87cd04a"
     "DirectionoutboundEventStartAppFrom14155550100To14155550199",
     "W4KA5JAK3anwn988JxEcqqLvesLBSes08AlUDwoLlbA="),
    ("POST", "https://example.com/plivo/getinput?step=2&flow=abc", "73818274838929109283", GETINPUT,
     "https://example.com/plivo/getinput?flow=abc&step=2.CallUUIDd0a87a1a-b0e9-4ab2-ac07-c22ee87cd04aDigits"
     "From14155550100InputTypespeechSpeechyes pleaseSpeechConfidenceScore0.92To14155550199",
     "E+ztpx31JG10kW6rzMckEv7NMXu2I1w9hIGB/E0mt20="),
    ("GET", "https://example.com/plivo/hangup?CallUUID=abc&HangupCause=NORMAL_CLEARING", "11111111111111111111", {},
     "https://example.com/plivo/hangup?CallUUID=abc&HangupCause=NORMAL_CLEARING",
     "v0Kjm2HJycuqzFCm/lttDLoj6VdwKrzhyAyg+pOEwFc="),
    ("POST", "https://example.com/plivo/empty", "22222222222222222222", {},
     "https://example.com/plivo/empty", "kap+z1HfgamrqtsZpWpVYUu6fNiSi5nIUDnMWNXM3+s="),
]


def v3_headers(signature: str, nonce: str) -> dict[str, str]:
    return {"X-Plivo-Signature-V3": signature, "X-Plivo-Signature-V3-Nonce": nonce}


@pytest.mark.parametrize(("method", "url", "expected"), GO_VECTORS)
def test_plivo_go_suite_vectors(method: str, url: str, expected: str) -> None:
    assert sig.compute_v3(GO_TOKEN, method, url, GO_NONCE, GO_PARAMS.items()) == expected
    form = GO_PARAMS if method == "POST" else {}
    target = url
    if method == "GET":        # the GET form carries the params in the query
        from urllib.parse import urlencode

        target = url + ("&" if "?" in url else "?") + urlencode(GO_PARAMS)
    sig.verify_v3(GO_TOKEN, request(target, form, v3_headers(expected, GO_NONCE), method))


@pytest.mark.parametrize(("method", "url", "nonce", "params", "signed", "expected"), NEW_VECTORS)
def test_new_vectors_string_and_signature(method: str, url: str, nonce: str, params: dict[str, str],
                                          signed: str, expected: str) -> None:
    assert sig.v3_string(method, url, params.items()) == signed
    assert sig.compute_v3(TOKEN, method, url, nonce, params.items()) == expected
    assert validate_v3_signature(method, url, nonce, TOKEN, expected, dict(params))      # the SDK agrees
    provider = PlivoProvider(make_settings())
    key = provider.verify(request(url, params, v3_headers(expected, nonce), method))
    assert len(key) == 64


def test_several_signatures_in_one_header() -> None:
    _, url, nonce, params, _, good = NEW_VECTORS[0]
    req = request(url, params, v3_headers(f"AAAA,{good}", nonce))
    sig.verify_v3(TOKEN, req)
    # Like the SDK, parts are not trimmed: a space after the comma fails.
    with pytest.raises(SignatureError):
        sig.verify_v3(TOKEN, request(url, params, v3_headers(f"AAAA, {good}", nonce)))
    assert not validate_v3_signature("POST", url, nonce, TOKEN, f"AAAA, {good}", dict(params))
    with pytest.raises(SignatureError, match="at most"):
        sig.verify_v3(TOKEN, request(url, params, v3_headers(",".join([good] * 9), nonce)))


@pytest.mark.parametrize("change", ["field", "extra field", "url", "nonce", "token", "query"])
def test_forged_requests_fail(change: str) -> None:
    _, url, nonce, params, _, good = NEW_VECTORS[1]
    form, token = dict(params), TOKEN
    if change == "field":
        form["Speech"] = "no thanks"
    elif change == "extra field":
        form["Digits"] = "1"
    elif change == "url":
        url = url.replace("/plivo/", "/other/")
    elif change == "nonce":
        nonce = nonce[:-1] + "4"
    elif change == "token":
        token = TOKEN[:-1] + "y"
    else:
        url = url.replace("step=2", "step=3")
    with pytest.raises(SignatureError, match="does not match"):
        sig.verify_v3(token, request(url, form, v3_headers(good, nonce)))


def test_missing_headers_and_token() -> None:
    _, url, nonce, params, _, good = NEW_VECTORS[0]
    for headers in ({}, {"X-Plivo-Signature-V3": good}, {"X-Plivo-Signature-V3-Nonce": nonce}):
        with pytest.raises(SignatureError, match="missing"):
            sig.verify_v3(TOKEN, request(url, params, headers))
    with pytest.raises(SignatureError, match="not configured"):
        sig.verify_v3("", request(url, params, v3_headers(good, nonce)))
    assert PlivoProvider.signature_headers == ("x-plivo-signature-v3", "x-plivo-signature-v3-nonce")


def test_message_never_carries_the_signature_or_token() -> None:
    _, url, nonce, params, _, good = NEW_VECTORS[0]
    with pytest.raises(SignatureError) as info:
        sig.verify_v3(TOKEN, request(url + "?x=1", params, v3_headers(good, nonce)))
    assert good not in str(info.value) and TOKEN not in str(info.value) and "x=1" not in str(info.value)


def test_replayed_request_has_the_same_key_and_a_new_nonce_another() -> None:
    """Plivo signs no timestamp: a replay is the same nonce again, which the
    runtime's replay table (keyed on what verify returns) drops."""
    method, url, nonce, params, _, good = NEW_VECTORS[0]
    first = sig.verify_v3(TOKEN, request(url, params, v3_headers(good, nonce)))
    again = sig.verify_v3(TOKEN, request(url, params, v3_headers(good, nonce)))
    assert first == again
    other_nonce = "9" * 20
    fresh = sig.compute_v3(TOKEN, method, url, other_nonce, params.items())
    assert sig.verify_v3(TOKEN, request(url, params, v3_headers(fresh, other_nonce))) != first
    # A stale signature with a fresh nonce is a forgery.
    with pytest.raises(SignatureError):
        sig.verify_v3(TOKEN, request(url, params, v3_headers(good, other_nonce)))


def test_default_port_variants_as_for_twilio() -> None:
    _, url, nonce, params, _, _ = NEW_VECTORS[0]
    with_port = url.replace("example.com", "example.com:443")
    signed_without = sig.compute_v3(TOKEN, "POST", url, nonce, params.items())
    sig.verify_v3(TOKEN, request(with_port, params, v3_headers(signed_without, nonce)))
    signed_with = sig.compute_v3(TOKEN, "POST", with_port, nonce, params.items())
    sig.verify_v3(TOKEN, request(url, params, v3_headers(signed_with, nonce)))


def test_v2_vectors() -> None:
    v2 = {"X-Plivo-Signature-V2": "ehV3IKhLysWBxC1sy8INm0qGoQYdYsHwuoKjsX7FsXc=",
          "X-Plivo-Signature-V2-Nonce": "12345"}
    assert sig.compute_v2("my_auth_token", "https://answer.url", "12345") == v2["X-Plivo-Signature-V2"]
    sig.verify_v2("my_auth_token", request("https://answer.url", {}, v2))
    with pytest.raises(SignatureError, match="does not match"):
        sig.verify_v2("my_auth_tokens", request("https://answer.url", {}, v2))
    url, nonce = "https://example.com/plivo/answer?ignored=1", "12345678901234567890"
    expected = "QmuyCluVFyVdro7bxXR6XTzfbjlwgOCdkcotonagr48="
    assert sig.compute_v2(TOKEN, url, nonce) == expected
    assert validate_signature(url, nonce, expected, TOKEN)
    provider = PlivoProvider(make_settings())
    headers = {"X-Plivo-Signature-V2": expected, "X-Plivo-Signature-V2-Nonce": nonce}
    assert provider.verify_v2(request(url, {"CallUUID": "x"}, headers))
    with pytest.raises(SignatureError, match="missing"):
        provider.verify_v2(request(url, {}, {"X-Plivo-Signature-V2": expected}))
    # The runtime requires V3: V2 headers alone do not pass verify().
    with pytest.raises(SignatureError, match="missing X-Plivo-Signature-V3"):
        provider.verify(request(url, {}, headers))
