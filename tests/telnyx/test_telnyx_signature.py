"""Ed25519 webhook verification (reference/protocols.md §4): the SDK's test
vector, every accepted key form, and every way a delivery can be wrong."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from telnyx_support import request

from voicecall.engine.errors import SignatureError
from voicecall.providers.telnyx.signature import (
    load_public_key,
    public_key_b64,
    sign,
    signed_headers,
    verify,
    verify_signature,
)

# The vector the Telnyx SDK verifies (reference/protocols.md §4).
VECTOR_KEY = "1T9ovG8UleVcmOnlFcxxeioSssei62N2/26BR3WFTdE="
VECTOR_TS = "1700000000"
VECTOR_BODY = (
    b'{"data":{"event_type":"call.answered","id":"0ccc7b54-4df3-4bca-a65a-3da1ecc777f0",'
    b'"occurred_at":"2024-01-01T00:00:00.000000Z","payload":{"call_control_id":"v3:abc123",'
    b'"call_leg_id":"428c31b6-7af4-4bcb-b7f5-5013ef9657c1","call_session_id":"428c31b6-abf3-3bc1-b7f4-5013ef9657c1",'
    b'"client_state":"eyJmbG93IjoiZGVtbyJ9","connection_id":"7267xxxxxxxxxxxxxx","from":"+15551230000",'
    b'"to":"+15559870000","state":"answered"},"record_type":"event"},"meta":{"attempt":1,'
    b'"delivered_to":"https://example.com/webhooks/telnyx"}}'
)
VECTOR_SIG = "p9q4v4APXMIniqh6OKJ1Ly6wyiRi4DHSnbedldZbLTnGJCPGytDs6r58LnZpDidXP1iT731vTi1D0jXMyYpaCw=="
SEED = hashlib.sha256(b"telnyx-test-vector-seed-1").digest()
NOW = 1_700_000_000


def vector_headers(sig: str = VECTOR_SIG, ts: str = VECTOR_TS) -> dict[str, str]:
    return {"telnyx-signature-ed25519": sig, "telnyx-timestamp": ts}


def key_forms() -> dict[str, str]:
    private = Ed25519PrivateKey.from_private_bytes(SEED)
    public = private.public_key()
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return {"raw": public_key_b64(private), "der": base64.b64encode(der).decode(), "pem": pem.decode(),
            "raw-urlsafe-unpadded": VECTOR_KEY.replace("+", "-").replace("/", "_").rstrip("=")}


def test_the_sdk_vector_verifies_within_the_window() -> None:
    assert public_key_b64(Ed25519PrivateKey.from_private_bytes(SEED)) == VECTOR_KEY
    for now in (NOW, NOW + 299, NOW + 300, NOW - 300):
        assert verify_signature(VECTOR_KEY, vector_headers(), VECTOR_BODY, now)


@pytest.mark.parametrize("form", ["raw", "der", "pem", "raw-urlsafe-unpadded"])
def test_every_key_form_verifies(form: str) -> None:
    key = key_forms()[form]
    assert verify(key, request(VECTOR_BODY, vector_headers()), NOW)


def test_a_base64url_signature_verifies() -> None:
    urlsafe = VECTOR_SIG.replace("+", "-").replace("/", "_").rstrip("=")
    assert verify_signature(VECTOR_KEY, vector_headers(urlsafe), VECTOR_BODY, NOW)


@pytest.mark.parametrize("now, words", [(NOW + 301, "301 s away"), (NOW - 301, "301 s away"),
                                        (NOW + 86400, "86400 s away")])
def test_stale_or_future_timestamps_are_refused(now: int, words: str) -> None:
    with pytest.raises(SignatureError, match=words):
        verify_signature(VECTOR_KEY, vector_headers(), VECTOR_BODY, now)


def test_one_added_byte_fails() -> None:
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(VECTOR_KEY, vector_headers(), VECTOR_BODY + b" ", NOW)


def test_forged_signature_from_another_key_fails() -> None:
    forger = Ed25519PrivateKey.generate()
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(VECTOR_KEY, vector_headers(sign(forger, VECTOR_TS, VECTOR_BODY)), VECTOR_BODY, NOW)


def test_a_signature_moved_to_another_timestamp_fails() -> None:
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(VECTOR_KEY, vector_headers(ts=str(NOW + 10)), VECTOR_BODY, NOW)


@pytest.mark.parametrize("headers, words", [
    ({"telnyx-timestamp": VECTOR_TS}, "missing telnyx-signature-ed25519"),
    ({"telnyx-signature-ed25519": VECTOR_SIG}, "missing telnyx-timestamp"),
    (vector_headers(ts="17e8"), "not Unix seconds"),
    (vector_headers(sig="not base64!"), "not base64"),
    (vector_headers(sig=base64.b64encode(b"short").decode()), "5 bytes, not 64"),
])
def test_malformed_headers_are_refused(headers: dict[str, str], words: str) -> None:
    with pytest.raises(SignatureError, match=words):
        verify_signature(VECTOR_KEY, headers, VECTOR_BODY, NOW)


@pytest.mark.parametrize("key, words", [
    ("", "empty"),
    ("%%%", "not base64"),
    (base64.b64encode(b"x" * 20).decode(), "20 bytes"),
    ("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "PEM block"),
])
def test_unusable_keys_are_named_without_the_key(key: str, words: str) -> None:
    with pytest.raises(SignatureError, match=words) as info:
        verify_signature(key, vector_headers(), VECTOR_BODY, NOW)
    assert key not in str(info.value) or not key


def test_a_non_ed25519_key_is_refused() -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    der = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    load_public_key.cache_clear()
    with pytest.raises(SignatureError, match="not an Ed25519 key"):
        verify_signature(base64.b64encode(der).decode(), vector_headers(), VECTOR_BODY, NOW)


def test_replay_key_is_stable_per_delivery_and_differs_for_a_redelivery() -> None:
    private = Ed25519PrivateKey.from_private_bytes(SEED)
    first = verify_signature(VECTOR_KEY, signed_headers(private, NOW, VECTOR_BODY), VECTOR_BODY, NOW)
    again = verify_signature(VECTOR_KEY, signed_headers(private, NOW, VECTOR_BODY), VECTOR_BODY, NOW)
    later = verify_signature(VECTOR_KEY, signed_headers(private, NOW + 5, VECTOR_BODY), VECTOR_BODY, NOW)
    assert first == again != later


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=200), st.integers(min_value=0, max_value=len(VECTOR_BODY) - 1),
       st.integers(min_value=1, max_value=255))
def test_any_mutation_of_the_body_fails(insert: bytes, position: int, flip: int) -> None:
    flipped = bytearray(VECTOR_BODY)
    flipped[position] ^= flip
    for body in (bytes(flipped), VECTOR_BODY[:position] + insert + VECTOR_BODY[position:]):
        with pytest.raises(SignatureError):
            verify_signature(VECTOR_KEY, vector_headers(), body, NOW)
