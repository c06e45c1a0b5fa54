"""Telnyx webhook signatures: Ed25519 over ``"{timestamp}|{raw body}"``
(reference/protocols.md §4), verified with ``cryptography``.

The public key comes from the Mission Control portal as base64 of the 32 raw
bytes; a DER SubjectPublicKeyInfo (base64) or a PEM block is accepted too,
as the reference plugin does. Signatures may be base64 or base64url. No
message carries a key or a whole signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from functools import lru_cache

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from voicecall.engine.errors import SignatureError
from voicecall.providers.base import WebhookRequest

SIGNATURE_HEADER = "telnyx-signature-ed25519"
TIMESTAMP_HEADER = "telnyx-timestamp"
SIGNATURE_HEADERS = (SIGNATURE_HEADER, TIMESTAMP_HEADER)
TOLERANCE_S = 300          # Telnyx SDK: TIMESTAMP_TOLERANCE_SECONDS, same window both ways


class PublicKeyError(ValueError):
    """A configured public key that is not an Ed25519 key in any accepted form."""


def _b64(text: str) -> bytes:
    """Standard or URL-safe base64, padding optional."""
    cleaned = "".join(text.split())
    cleaned += "=" * (-len(cleaned) % 4)
    alt = cleaned.replace("-", "+").replace("_", "/")
    return base64.b64decode(alt, validate=True)


@lru_cache(maxsize=8)
def load_public_key(configured: str) -> Ed25519PublicKey:
    """The Ed25519 key from config: base64 raw (32 bytes), base64 DER SPKI, or PEM.

    Raises PublicKeyError with a message that never repeats the key.
    """
    text = (configured or "").strip()
    if not text:
        raise PublicKeyError("telnyx.publicKey is empty")
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text.encode("ascii"))
        except (ValueError, UnicodeEncodeError) as exc:
            raise PublicKeyError(f"telnyx.publicKey is a PEM block that cannot be read "
                                 f"({type(exc).__name__})") from None
    else:
        try:
            raw = _b64(text)
        except (binascii.Error, ValueError):
            raise PublicKeyError("telnyx.publicKey is not base64 "
                                 "(expected the portal's base64 key, DER or PEM)") from None
        if len(raw) == 32:
            return Ed25519PublicKey.from_public_bytes(raw)
        try:
            key = serialization.load_der_public_key(raw)
        except ValueError:
            raise PublicKeyError(f"telnyx.publicKey decodes to {len(raw)} bytes: neither a raw 32-byte "
                            "Ed25519 key nor a DER SubjectPublicKeyInfo") from None
    if not isinstance(key, Ed25519PublicKey):
        raise PublicKeyError(f"telnyx.publicKey is a {type(key).__name__.lstrip('_')}, not an Ed25519 key")
    return key


def sign(private_key: Ed25519PrivateKey, timestamp: int | str, body: bytes) -> str:
    """The base64 signature Telnyx puts in ``telnyx-signature-ed25519``."""
    return base64.b64encode(private_key.sign(f"{timestamp}|".encode() + body)).decode("ascii")


def signed_headers(private_key: Ed25519PrivateKey, timestamp: int, body: bytes) -> dict[str, str]:
    return {"telnyx-signature-ed25519": sign(private_key, timestamp, body), "telnyx-timestamp": str(timestamp)}


def public_key_b64(private_key: Ed25519PrivateKey) -> str:
    raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def verify_signature(public_key: str, headers: Mapping[str, str], body: bytes, now: float) -> str:
    """Check one delivery; return its replay key, or raise SignatureError.

    ``headers`` have lower-cased names. The timestamp is checked first (cheap),
    then the signature over the exact raw bytes, never re-serialised JSON.
    """
    try:
        key = load_public_key(public_key)
    except PublicKeyError as exc:
        raise SignatureError(f"cannot verify Telnyx webhooks: {exc}") from None
    signature = headers.get(SIGNATURE_HEADER, "")
    stamp = headers.get(TIMESTAMP_HEADER, "")
    if not signature:
        raise SignatureError("missing telnyx-signature-ed25519 header")
    if not stamp:
        raise SignatureError("missing telnyx-timestamp header")
    if not stamp.isdigit() or len(stamp) > 12:
        raise SignatureError(f"telnyx-timestamp {stamp[:20]!r} is not Unix seconds")
    skew = abs(now - int(stamp))
    if skew > TOLERANCE_S:
        raise SignatureError(f"telnyx-timestamp is {skew:.0f} s away from now (allowed {TOLERANCE_S} s)")
    try:
        raw_sig = _b64(signature)
    except (binascii.Error, ValueError):
        raise SignatureError("telnyx-signature-ed25519 is not base64") from None
    if len(raw_sig) != 64:
        raise SignatureError(f"telnyx-signature-ed25519 decodes to {len(raw_sig)} bytes, not 64")
    try:
        # Ed25519 verification itself does not leak where a forged signature differs.
        key.verify(raw_sig, f"{stamp}|".encode() + body)
    except InvalidSignature:
        raise SignatureError("telnyx-signature-ed25519 does not match the request body") from None
    # One key per delivery: a redelivery (new timestamp) is new here, and the
    # event id (Event.key) dedupes it in the store.
    material = b"\n".join((stamp.encode(), base64.b64encode(raw_sig), body))
    return hashlib.sha256(material).hexdigest()


def verify(public_key: str, req: WebhookRequest, now: float) -> str:
    return verify_signature(public_key, req.headers, req.body, now)
