"""Plivo's webhook signatures, reference/protocols.md §5 "Plivo signatures".

V3 (``X-Plivo-Signature-V3`` + ``-Nonce``) signs the URL, its query and, for
POST, every form field; V2 (``X-Plivo-Signature-V2`` + ``-Nonce``) signs only
scheme, host and path. Both MAC with the auth token (HMAC-SHA256, base64).
The V3 header may carry several signatures separated by commas (one per
token during a rotation); like the SDK we split on bare commas, untrimmed.

Written here rather than calling ``plivo.utils`` so webhooks verify without
importing the SDK; the emulator signs with the SDK, so the tests compare the
two. Comparisons are constant-time and messages never carry a signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qs, parse_qsl, urlsplit, urlunsplit

from voicecall.engine.errors import SignatureError
from voicecall.engine.security import constant_time_equals, url_variants
from voicecall.providers.base import WebhookRequest

V3_HEADER = "x-plivo-signature-v3"
V3_NONCE_HEADER = "x-plivo-signature-v3-nonce"
V2_HEADER = "x-plivo-signature-v2"
V2_NONCE_HEADER = "x-plivo-signature-v2-nonce"
MAX_SIGNATURES = 8          # a rotation needs two; more is someone fishing


def _base(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _grouped(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in pairs:
        out.setdefault(name, []).append(value)
    return out


def _query_string(params: Mapping[str, list[str]]) -> str:
    """``k=v&k=v2`` with keys and each key's values sorted, not re-encoded (as the SDK)."""
    return "&".join(f"{k}={v}" for k in sorted(params) for v in sorted(params[k]))


def _params_string(params: Mapping[str, list[str]]) -> str:
    return "".join(f"{k}{v}" for k in sorted(params) for v in sorted(params[k]))


def v3_string(method: str, url: str, params: Iterable[tuple[str, str]] = ()) -> str:
    """The string V3 signs (before ``"." + nonce``) for a GET or POST to ``url``."""
    query = parse_qs(urlsplit(url).query, keep_blank_values=True)
    base = _base(url)
    if method.upper() == "GET":
        merged = {**_grouped(params), **query}          # the query wins, as in the Python SDK
        q = _query_string(merged)
        return f"{base}?{q}" if q else base
    if method.upper() != "POST":
        raise SignatureError(f"Plivo signs GET and POST requests, not {method[:10]!r}")
    q = _query_string(query)
    p = _params_string(_grouped(params))
    if p:
        return f"{base}?{q}{'.' if q else ''}{p}"
    return f"{base}?{q}" if q else base


def compute_v3(token: str, method: str, url: str, nonce: str, params: Iterable[tuple[str, str]] = ()) -> str:
    message = f"{v3_string(method, url, params)}.{nonce}".encode()
    return base64.b64encode(hmac.new(token.encode(), message, hashlib.sha256).digest()).decode("ascii")


def compute_v2(token: str, url: str, nonce: str) -> str:
    message = (_base(url) + nonce).encode()
    return base64.b64encode(hmac.new(token.encode(), message, hashlib.sha256).digest()).decode("ascii")


def _form(req: WebhookRequest) -> tuple[tuple[str, str], ...]:
    if req.form or not req.body or req.method.upper() == "GET":
        return req.form
    try:
        return tuple(parse_qsl(req.body.decode("utf-8"), keep_blank_values=True, strict_parsing=True))
    except (UnicodeDecodeError, ValueError):
        raise SignatureError("Plivo webhook body is not a form") from None


def verify_v3(token: str, req: WebhookRequest) -> str:
    """Check ``X-Plivo-Signature-V3``; return the replay key or raise SignatureError."""
    if not token:
        raise SignatureError("Plivo auth token is not configured; cannot verify webhooks")
    header = req.headers.get(V3_HEADER, "")
    nonce = req.headers.get(V3_NONCE_HEADER, "")
    if not header or not nonce:
        raise SignatureError("missing X-Plivo-Signature-V3 or X-Plivo-Signature-V3-Nonce header")
    offered = header.split(",")
    if len(offered) > MAX_SIGNATURES:
        raise SignatureError(f"X-Plivo-Signature-V3 holds {len(offered)} signatures (at most {MAX_SIGNATURES})")
    params = _form(req) if req.method.upper() == "POST" else ()
    # Every variant against every offered signature, so timing tells nothing.
    matched = False
    for url in url_variants(req.url):
        expected = compute_v3(token, req.method, url, nonce, params)
        for candidate in offered:
            matched |= constant_time_equals(expected, candidate)
    if not matched:
        raise SignatureError(f"X-Plivo-Signature-V3 does not match the request to {_base(req.url)}")
    # The nonce is unique per request Plivo sends: the same nonce, URL and
    # fields again is a replay.
    material = "\n".join((req.method.upper(), req.url, nonce, _params_string(_grouped(params))))
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def verify_v2(token: str, req: WebhookRequest) -> str:
    """Check the older ``X-Plivo-Signature-V2`` (URL and nonce only: fields are not
    covered, so the runtime requires V3; this is for callers that only get V2)."""
    if not token:
        raise SignatureError("Plivo auth token is not configured; cannot verify webhooks")
    signature = req.headers.get(V2_HEADER, "")
    nonce = req.headers.get(V2_NONCE_HEADER, "")
    if not signature or not nonce:
        raise SignatureError("missing X-Plivo-Signature-V2 or X-Plivo-Signature-V2-Nonce header")
    matched = False
    for url in url_variants(req.url):
        matched |= constant_time_equals(compute_v2(token, url, nonce), signature)
    if not matched:
        raise SignatureError(f"X-Plivo-Signature-V2 does not match the request to {_base(req.url)}")
    return hashlib.sha256("\n".join(("v2", req.url, nonce)).encode("utf-8")).hexdigest()
