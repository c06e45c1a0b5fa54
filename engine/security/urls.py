"""The URL a carrier signed, rebuilt from publicUrl or the request and its
trusted forwarding headers; Twilio's port variants; constant-time compare."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping
from urllib.parse import urlsplit

from voicecall.engine.errors import SignatureError
from voicecall.engine.security.gate import show_untrusted
from voicecall.engine.security.policy import (
    PORT_RE,
    SecurityPolicy,
    parse_ip,
    split_port,
    valid_host,
)

log = logging.getLogger(__name__)


def _first(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        return None
    return value.split(",", 1)[0].strip()


_FORWARDED_HOST_HEADERS = ("x-forwarded-host", "x-original-host", "ngrok-forwarded-host")
_DEFAULT_PORT = {"http": "80", "https": "443"}


def signed_url(policy: SecurityPolicy, *, scheme: str, host: str, path_qs: str,
               headers: Mapping[str, str], peer: str) -> str:
    """The URL the carrier signed (DESIGN §4 "Forwarding headers").

    ``path_qs`` is the raw request target (aiohttp ``request.raw_path``): its
    query is kept byte for byte. With ``publicUrl`` the result is publicUrl's
    scheme, host and path plus that query. Otherwise it is the request's own
    URL, with forwarding headers applied only when trusted (see
    ``forwarding_trusted``); raises SignatureError for an unusable Host.
    """
    if not path_qs.startswith("/"):
        raise ValueError(f"path_qs must be the raw request target, found {path_qs!r}")
    path, sep, query = path_qs.partition("?")
    if policy.public_url:
        base = urlsplit(policy.public_url)
        return f"{base.scheme}://{base.netloc}{base.path}{sep}{query}"

    scheme = scheme.lower()
    if scheme not in _DEFAULT_PORT:
        raise ValueError(f"scheme must be http or https, found {scheme!r}")
    fwd_raw = next((_first(headers, h) for h in _FORWARDED_HOST_HEADERS if h in headers), None)
    fwd_host = valid_host(fwd_raw) if fwd_raw is not None else None
    final_host = None
    if (fwd_raw is None or fwd_host is not None) and forwarding_trusted(policy, fwd_host, peer):
        proto = (_first(headers, "x-forwarded-proto") or "").lower()
        if proto in _DEFAULT_PORT:
            scheme = proto
        final_host = fwd_host or valid_host(host)
        port = _first(headers, "x-forwarded-port")
        if final_host and port and PORT_RE.fullmatch(port) and 0 < int(port) < 65536:
            name, has_port = split_port(final_host)
            if has_port is None and port != _DEFAULT_PORT[scheme]:
                final_host = f"{name}:{port}"
    elif fwd_raw is not None:
        log.debug("forwarding headers from %s ignored (host %s)",
                  show_untrusted(peer), show_untrusted(fwd_raw))
    if final_host is None:
        final_host = valid_host(host)
        if final_host is None:
            raise SignatureError(f"invalid Host header {show_untrusted(host)}")
    return f"{scheme}://{final_host}{path}{sep}{query}"


def forwarding_trusted(policy: SecurityPolicy, forwarded_host: str | None, peer: str) -> bool:
    """Whether this request's forwarding headers may rebuild the signed URL.

    Both must hold: the host test (a forwarded host must be in allowedHosts
    when that list is set; otherwise trustForwardingHeaders must be on) and the
    proxy test (trustedProxyIPs empty or holding the peer). A loopback peer
    under the ngrok rule passes both, but allowedHosts still binds its host.
    """
    ip = parse_ip(peer)
    ngrok = policy.ngrok_loopback and ip is not None and ip.is_loopback
    if forwarded_host is not None and policy.allowed_hosts:
        lowered = forwarded_host.lower()
        name, _ = split_port(lowered)
        host_ok = lowered in policy.allowed_hosts or name in policy.allowed_hosts
    else:
        host_ok = policy.trust_forwarding_headers or ngrok
    proxy_ok = ngrok or not policy.trusted_proxy_ips or policy.peer_is_trusted_proxy(peer)
    return host_ok and proxy_ok


def url_variants(url: str) -> tuple[str, ...]:
    """The forms Twilio's ``RequestValidator.validate`` accepts: the URL as is,
    then without its port, or with the scheme's default port when it has none."""
    parts = urlsplit(url)
    scheme_sep = url.find("://")
    if scheme_sep < 0 or parts.scheme not in _DEFAULT_PORT:
        return (url,)
    start = scheme_sep + 3
    end = len(url)
    for stop in "/?#":
        i = url.find(stop, start)
        if i >= 0:
            end = min(end, i)
    netloc = url[start:end]
    userinfo, at, hostport = netloc.rpartition("@")
    name, port = split_port(hostport) if hostport else (hostport, None)
    other = f"{name}" if port else f"{name}:{_DEFAULT_PORT[parts.scheme]}"
    variant = url[:start] + userinfo + at + other + url[end:]
    return (url,) if variant == url else (url, variant)


def constant_time_equals(a: str | bytes, b: str | bytes) -> bool:
    a_bytes = a.encode("utf-8") if isinstance(a, str) else a
    b_bytes = b.encode("utf-8") if isinstance(b, str) else b
    return hmac.compare_digest(a_bytes, b_bytes)

