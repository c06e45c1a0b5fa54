"""Twilio's webhook signature (``X-Twilio-Signature``), reference/protocols.md §1.

The string signed is the URL Twilio requested followed by every form field as
``name + value``, sorted by name (a repeated name's values sorted and
de-duplicated, as the official SDK does), MACed with the auth token and
base64-encoded. JSON bodies are covered by a ``bodySHA256`` query parameter
instead. Every comparison is constant-time, and no message carries the token
or a full signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from urllib.parse import parse_qs, parse_qsl, urlsplit

from voicecall.engine.errors import SignatureError
from voicecall.engine.security import constant_time_equals, url_variants
from voicecall.providers.base import WebhookRequest

SIGNATURE_HEADER = "x-twilio-signature"
SETTINGS_HEADER = "x-twilio-webhooks-signature-settings"
HMAC_SHA1 = "HMAC_SHA1"
HMAC_SHA256 = "HMAC_SHA256"
_HASHES = {HMAC_SHA1: hashlib.sha1, HMAC_SHA256: hashlib.sha256}


def canonical_params(params: Iterable[tuple[str, str]]) -> str:
    """``name+value`` for every field, names sorted, each name's values sorted and de-duplicated."""
    grouped: dict[str, set[str]] = {}
    for name, value in params:
        grouped.setdefault(name, set()).add(value)
    return "".join(name + value for name in sorted(grouped) for value in sorted(grouped[name]))


def compute_signature(token: str, url: str, params: Iterable[tuple[str, str]] = (),
                      algorithm: str = HMAC_SHA1) -> str:
    """The base64 MAC Twilio puts in ``X-Twilio-Signature`` for this URL and form."""
    digest = _HASHES.get(algorithm.upper())
    if digest is None:
        raise SignatureError(f"unsupported Twilio signature algorithm {algorithm[:40]!r}")
    message = (url + canonical_params(params)).encode("utf-8")
    return base64.b64encode(hmac.new(token.encode("utf-8"), message, digest).digest()).decode("ascii")


def signature_algorithm(settings_header: str | None) -> str:
    """The algorithm named in ``X-Twilio-Webhooks-Signature-Settings`` (HMAC_SHA1 when absent)."""
    for part in (settings_header or "").split(","):
        name, sep, value = part.partition("=")
        if sep and name.strip() == "algorithm" and value.strip():
            return value.strip().upper()
    return HMAC_SHA1


def body_sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def verify(token: str, req: WebhookRequest) -> str:
    """Check a Twilio webhook; return its replay key, or raise SignatureError.

    ``req.url`` is the URL Twilio signed, already rebuilt by the engine. A form
    body signs its fields; any other body must match the URL's ``bodySHA256``.
    """
    if not token:
        raise SignatureError("Twilio auth token is not configured; cannot verify webhooks")
    signature = req.headers.get(SIGNATURE_HEADER, "")
    if not signature:
        raise SignatureError("missing X-Twilio-Signature header")
    algorithm = signature_algorithm(req.headers.get(SETTINGS_HEADER))
    if algorithm not in _HASHES:
        raise SignatureError(f"unsupported Twilio signature algorithm {algorithm[:40]!r}")

    params: tuple[tuple[str, str], ...] = req.form
    body_query = parse_qs(urlsplit(req.url).query).get("bodySHA256")
    if body_query and not req.form:
        # JSON webhooks: the body is covered by its hash in the (signed) URL.
        if not constant_time_equals(body_sha256(req.body), body_query[0]):
            raise SignatureError("Twilio bodySHA256 does not match the request body")
        params = ()
    elif req.body and not req.form:
        params = _form(req.body)

    # Each comparison is constant time. Stopping at the first match only tells
    # which port form of the requester's own URL was signed, which is no secret,
    # and spares the second HMAC on nearly every request.
    if not any(constant_time_equals(compute_signature(token, url, params, algorithm), signature)
               for url in url_variants(req.url)):
        raise SignatureError(
            f"X-Twilio-Signature ({algorithm}) does not match the request to {_path_only(req.url)}"
        )
    material = "\n".join((req.url, canonical_params(params), signature))
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def _form(body: bytes) -> tuple[tuple[str, str], ...]:
    """A form body the server did not parse (every field signs, empty ones too)."""
    try:
        return tuple(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True))
    except (UnicodeDecodeError, ValueError):
        raise SignatureError("Twilio webhook body is neither a form nor covered by bodySHA256") from None


def _path_only(url: str) -> str:
    # The query may carry turn tokens; the path is enough to find the webhook in a log.
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"
