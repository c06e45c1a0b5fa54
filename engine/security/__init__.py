"""Webhook checks every carrier shares (DESIGN §4), as pure functions the
aiohttp server calls in this order before any side effect:

1. ``check_preflight``: exact path (404), POST (405), signature headers
   present (401, before the body is read), per-IP in-flight cap (429);
2. ``read_body``: at most ``max_body`` bytes within ``body_timeout_s`` (413/408);
3. ``signed_url`` rebuilds the URL the carrier signed, for ``provider.verify``
   (a SignatureError there becomes ``Rejection.bad_signature`` → 401);
4. ``replay_key`` + ``ReplayCache`` (then ``StoredKeys`` and, when it says
   maybe, the store) drop replays.

The mock carrier's HMAC signature lives here too (``sign_mock``/``verify_mock``).
Nothing here reads the environment or the clock on its own: settings, ``now``
and clocks are passed in.
"""

from voicecall.engine.security.gate import (
    BodyTimeout,
    BodyTooLarge,
    InFlightLimiter,
    Rejection,
    check_preflight,
    path_matches,
    read_body,
    required_headers_present,
)
from voicecall.engine.security.policy import SecurityPolicy, SettingsLike, parse_ip, valid_host
from voicecall.engine.security.replay import (
    MOCK_SECRET_FILE,
    MOCK_SIGNATURE_HEADER,
    MOCK_SIGNATURE_HEADERS,
    MOCK_TIMESTAMP_HEADER,
    ReplayCache,
    StoredKeys,
    load_or_create_mock_secret,
    mock_headers,
    replay_key,
    sign_mock,
    verify_mock,
)
from voicecall.engine.security.urls import (
    constant_time_equals,
    forwarding_trusted,
    signed_url,
    url_variants,
)

__all__ = [
    "MOCK_SECRET_FILE",
    "MOCK_SIGNATURE_HEADER",
    "MOCK_SIGNATURE_HEADERS",
    "MOCK_TIMESTAMP_HEADER",
    "BodyTimeout",
    "BodyTooLarge",
    "InFlightLimiter",
    "Rejection",
    "ReplayCache",
    "SecurityPolicy",
    "SettingsLike",
    "StoredKeys",
    "check_preflight",
    "constant_time_equals",
    "forwarding_trusted",
    "load_or_create_mock_secret",
    "mock_headers",
    "parse_ip",
    "path_matches",
    "read_body",
    "replay_key",
    "required_headers_present",
    "sign_mock",
    "signed_url",
    "url_variants",
    "valid_host",
    "verify_mock",
]
