"""The settings the webhook checks read, and the address/host parsing they share."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from voicecall.engine.errors import ConfigError, Problem

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_LOOPBACK_BINDS = {"localhost"}


class SettingsLike(Protocol):
    def get(self, dotted: str, default: Any = None) -> Any: ...


@dataclass(frozen=True)
class SecurityPolicy:
    """Everything the webhook checks need, built once from settings."""

    public_url: str | None = None
    allowed_hosts: tuple[str, ...] = ()
    trust_forwarding_headers: bool = False
    trusted_proxy_ips: tuple[str, ...] = ()      # IPs or CIDRs
    # True only for tunnel.provider ngrok + loopback serve.bind + the opt-in flag;
    # lets loopback peers (the local ngrok agent) supply forwarding headers.
    ngrok_loopback: bool = False
    webhook_path: str = "/voice/webhook"
    max_body: int = 65536
    body_timeout_s: float = 5.0
    max_in_flight_per_ip: int = 8
    skip_signature: bool = False
    _networks: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        problems: list[Problem] = []

        def bad(path: str, message: str) -> None:
            problems.append(Problem("<settings>", None, path, message))

        if self.public_url is not None:
            parts = urlsplit(self.public_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                bad("$.publicUrl", f"must be an http(s) URL with a host, found {self.public_url!r}")
        if not self.webhook_path.startswith("/"):
            bad("$.serve.path", f"must start with '/', found {self.webhook_path!r}")
        networks: list[IPNetwork] = []
        for i, entry in enumerate(self.trusted_proxy_ips):
            try:
                networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                bad(f"$.webhookSecurity.trustedProxyIPs[{i}]",
                    f"not an IP address or CIDR: {entry!r}")
        for i, host in enumerate(self.allowed_hosts):
            if valid_host(host) is None:
                bad(f"$.webhookSecurity.allowedHosts[{i}]",
                    f"not a host name (RFC 1123, optional :port): {host!r}")
        if self.max_body <= 0 or self.body_timeout_s <= 0 or self.max_in_flight_per_ip <= 0:
            bad("$", "max_body, body_timeout_s and max_in_flight_per_ip must be positive")
        if problems:
            raise ConfigError(problems)
        object.__setattr__(self, "_networks", tuple(networks))
        object.__setattr__(self, "allowed_hosts",
                           tuple(h.strip().lower() for h in self.allowed_hosts))

    @classmethod
    def from_settings(cls, settings: SettingsLike) -> SecurityPolicy:
        bind = str(settings.get("serve.bind", "127.0.0.1") or "")
        ngrok = (settings.get("tunnel.provider", "none") == "ngrok"
                 and _is_loopback_bind(bind)
                 and settings.get("tunnel.allowNgrokFreeTierLoopbackBypass", False) is True)
        return cls(
            public_url=settings.get("publicUrl") or None,
            allowed_hosts=_string_list(settings, "webhookSecurity.allowedHosts"),
            trust_forwarding_headers=settings.get(
                "webhookSecurity.trustForwardingHeaders", False) is True,
            trusted_proxy_ips=_string_list(settings, "webhookSecurity.trustedProxyIPs"),
            ngrok_loopback=ngrok,
            webhook_path=settings.get("serve.path", "/voice/webhook") or "/voice/webhook",
            skip_signature=settings.get("skipSignatureVerification", False) is True,
        )

    def peer_is_trusted_proxy(self, peer: str) -> bool:
        ip = parse_ip(peer)
        return ip is not None and any(ip in net for net in self._networks)


def _string_list(settings: SettingsLike, key: str) -> tuple[str, ...]:
    value = settings.get(key, None) or ()
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError([Problem("<settings>", None, f"$.{key}",
                               f"must be a list of strings, found {type(value).__name__}")])


def _is_loopback_bind(bind: str) -> bool:
    if bind.strip().lower() in _LOOPBACK_BINDS:
        return True
    ip = parse_ip(bind)
    return ip is not None and ip.is_loopback


def parse_ip(text: str | None) -> IPAddress | None:
    """An address from a peer string (brackets, zone ids and IPv4-mapped IPv6
    folded away), or None when it is not an IP (unix socket, empty)."""
    if not text:
        return None
    raw = text.strip().removeprefix("[").removesuffix("]").split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(raw)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
PORT_RE = re.compile(r"[0-9]{1,5}")


def valid_host(value: str) -> str | None:
    """``host[:port]`` (stripped, case kept: it is part of the signed URL) if it
    is an ASCII RFC 1123 name, IPv4 or [IPv6] with an optional port 1-65535;
    None otherwise."""
    original = value.strip()
    text = original.lower()
    if (not text or len(text) > 300 or not original.isascii()
            or any(c in text for c in "@/\\ \t?#")):
        return None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        host, rest = text[: end + 1], text[end + 1:]
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return None
    else:
        host, sep, port = text.partition(":")
        rest = sep + port
        if len(host) > 253 or not all(_LABEL.fullmatch(lbl) for lbl in host.split(".")):
            return None
    if rest:
        port = rest[1:]
        if not rest.startswith(":") or not PORT_RE.fullmatch(port) or not 0 < int(port) < 65536:
            return None
    return original


def split_port(host: str) -> tuple[str, str | None]:
    if host.startswith("["):
        end = host.index("]")
        return host[: end + 1], (host[end + 2:] or None)
    name, _, port = host.partition(":")
    return name, port or None

