"""The checks before the signature (DESIGN §4 order): exact path, POST,
signature headers present, per-IP in-flight cap, bounded body read."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
from collections.abc import Iterator, Mapping
from typing import Protocol

from voicecall.engine.errors import SignatureError, VoiceCallError
from voicecall.engine.security.policy import SecurityPolicy, parse_ip


class Rejection(VoiceCallError):
    """A webhook refused before the engine saw it. ``reason`` is a stable slug;
    ``log_message`` is safe to log (never a secret or a full signature)."""

    def __init__(self, http_status: int, reason: str, log_message: str,
                 headers: Mapping[str, str] | None = None):
        super().__init__(log_message)
        self.http_status = http_status
        self.reason = reason
        self.code = reason
        self.log_message = log_message
        self.headers: Mapping[str, str] = dict(headers or {})

    @classmethod
    def bad_signature(cls, error: SignatureError, peer: str = "") -> Rejection:
        """The 401 for a failed ``provider.verify`` (SignatureError texts are log-safe)."""
        return cls(401, "bad_signature", f"signature rejected from {show_untrusted(peer)}: {error}")


class BodyTooLarge(Rejection):
    def __init__(self, log_message: str):
        super().__init__(413, "body_too_large", log_message)


class BodyTimeout(Rejection):
    def __init__(self, log_message: str):
        super().__init__(408, "body_timeout", log_message)


def show_untrusted(value: str, limit: int = 120) -> str:
    """Attacker-supplied text for a log line: quoted, escaped, truncated."""
    text = value if len(value) <= limit else value[:limit] + "…"
    return repr(text)


# ------------------------------------------------------------- path, method


def path_matches(policy: SecurityPolicy, raw_path: str) -> bool:
    """Exact match of the raw request target's path (query allowed after '?').
    No normalisation: ``..``, trailing slash, case, ``%2F`` and ``//`` all miss."""
    path = raw_path.split("?", 1)[0]
    return path == policy.webhook_path


def required_headers_present(headers: Mapping[str, str], required: tuple[str, ...]) -> bool:
    """All named headers present (lower-cased keys) and not blank."""
    return all((headers.get(name.lower()) or "").strip() for name in required)


def check_preflight(policy: SecurityPolicy, limiter: InFlightLimiter, *, method: str,
                    raw_path: str, headers: Mapping[str, str], peer: str,
                    required_headers: tuple[str, ...]) -> None:
    """The checks before the body is read, in DESIGN §4 order. On success the
    caller holds an in-flight slot for ``peer`` and must ``limiter.leave(peer)``
    in a ``finally`` (or use ``with limiter.leaving(peer):``)."""
    if not path_matches(policy, raw_path):
        raise Rejection(404, "not_found", f"unknown path {show_untrusted(raw_path)} from {show_untrusted(peer)}")
    if method != "POST":
        raise Rejection(405, "method_not_allowed",
                        f"method {show_untrusted(method)} from {show_untrusted(peer)}", {"Allow": "POST"})
    if not policy.skip_signature and not required_headers_present(headers, required_headers):
        missing = [h for h in required_headers if not (headers.get(h.lower()) or "").strip()]
        raise Rejection(401, "missing_signature",
                        f"missing signature header(s) {', '.join(missing)} from {show_untrusted(peer)}")
    if not limiter.try_enter(peer):
        raise Rejection(429, "too_many_in_flight",
                        f"more than {limiter.per_ip} requests in flight from {show_untrusted(peer)}")


@functools.lru_cache(maxsize=4096)
def _bucket(peer: str) -> str:
    # Parsed once per peer address: a carrier sends every webhook from a few IPs,
    # and parsing showed up at ~1% of a saturated server's time.
    ip = parse_ip(peer)
    if ip is None:
        return peer
    if isinstance(ip, ipaddress.IPv6Address) and not ip.is_loopback:
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class InFlightLimiter:
    """Caps concurrent webhook requests per client. IPv6 clients are counted
    per /64, since one host commonly owns the whole prefix."""

    def __init__(self, per_ip: int):
        if per_ip <= 0:
            raise ValueError("per_ip must be positive")
        self.per_ip = per_ip
        self._counts: dict[str, int] = {}

    @staticmethod
    def bucket(peer: str) -> str:
        return _bucket(peer)

    def in_flight(self, peer: str) -> int:
        return self._counts.get(self.bucket(peer), 0)

    def try_enter(self, ip: str) -> bool:
        key = self.bucket(ip)
        count = self._counts.get(key, 0)
        if count >= self.per_ip:
            return False
        self._counts[key] = count + 1
        return True

    def leave(self, ip: str) -> None:
        key = self.bucket(ip)
        count = self._counts.get(key, 0)
        if count <= 0:
            raise RuntimeError(f"leave() without enter() for {ip!r}")
        if count == 1:
            del self._counts[key]
        else:
            self._counts[key] = count - 1

    @contextlib.contextmanager
    def leaving(self, ip: str) -> Iterator[None]:
        """Release a slot already taken (by ``check_preflight``) on exit."""
        try:
            yield
        finally:
            self.leave(ip)

    @contextlib.contextmanager
    def slot(self, ip: str) -> Iterator[None]:
        """Take a slot or raise the 429 Rejection; release it on exit."""
        if not self.try_enter(ip):
            raise Rejection(429, "too_many_in_flight",
                            f"more than {self.per_ip} requests in flight from {show_untrusted(ip)}")
        with self.leaving(ip):
            yield


# ---------------------------------------------------------------------- body


class _Readable(Protocol):
    async def read(self, n: int = -1) -> bytes: ...


async def read_body(request_content: _Readable, *, declared_length: int | None, limit: int,
                    timeout_s: float) -> bytes:
    """Read a request body of at most ``limit`` bytes within ``timeout_s``.

    Raises ``BodyTooLarge`` before reading when Content-Length is over the
    limit, and as soon as more than ``limit`` bytes have arrived (chunked
    bodies); ``BodyTimeout`` when the whole body is not in within ``timeout_s``.
    """
    if declared_length is not None and declared_length > limit:
        raise BodyTooLarge(f"Content-Length {declared_length} over the {limit}-byte limit")
    is_eof = getattr(request_content, "is_eof", None)
    if is_eof is not None and is_eof():
        # The whole body is already buffered (a small webhook usually arrives
        # with its headers): no read can wait, so no timer is armed for it.
        data = await request_content.read(limit + 1)
        if len(data) > limit:
            raise BodyTooLarge(f"body over the {limit}-byte limit")
        return data
    buf = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                # Ask for one byte more than still allowed, so an oversized
                # body is caught on the chunk that crosses the limit.
                chunk = await request_content.read(min(65536, limit + 1 - len(buf)))
                if not chunk:
                    return bytes(buf)
                buf += chunk
                if len(buf) > limit:
                    raise BodyTooLarge(f"body over the {limit}-byte limit")
    except TimeoutError:
        raise BodyTimeout(f"body not complete within {timeout_s:g} s "
                          f"({len(buf)} bytes received)") from None

