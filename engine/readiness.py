"""Readiness checks shared by ``setup``, ``smoke`` and ``serve`` (DESIGN §4, §8).

Every check is a pure function of the frozen settings plus what is on
``PATH`` (the ``ngrok`` / ``tailscale`` executables): no network, no store.
``public_url_problem`` is DESIGN §4's rule for the URL carriers are given.
"""

from __future__ import annotations

import ipaddress
import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from .config import Settings

CHECK_NAMES = ("config", "provider-credentials", "webhook-exposure", "audio-mode", "flows", "reaper")
BUILTIN_FLOWS = ("notify", "conversation", "inbound_greeting", "reaper")
REAPER_RECOMMENDED = "120-300 recommended"


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


def exposure(settings: Settings) -> str:
    """How carriers reach the webhook: ``publicUrl``, ``ngrok``,
    ``tailscale-serve``, ``tailscale-funnel`` or ``local`` (the serve address).
    ``publicUrl`` wins over a tunnel, a tunnel over the legacy ``tailscale.mode``."""
    if settings.get("publicUrl"):
        return "publicUrl"
    tunnel = str(settings.get("tunnel.provider", "none"))
    if tunnel != "none":
        return tunnel
    mode = str(settings.get("tailscale.mode", "off"))
    return f"tailscale-{mode}" if mode != "off" else "local"


def local_webhook_url(settings: Settings, port: int | None = None) -> str:
    """The URL built from ``serve`` (what the runtime uses with no public URL)."""
    bind = str(settings.get("serve.bind", "127.0.0.1"))
    host = "127.0.0.1" if bind in ("0.0.0.0", "::", "") else bind
    host = f"[{host}]" if ":" in host else host
    port = port if port is not None else int(settings.get("serve.port", 3334))
    return f"http://{host}:{port}{settings.get('serve.path', '/voice/webhook')}"


def _address_space(host: str) -> str | None:
    """"loopback" / "private" when a carrier on the internet cannot reach ``host``."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return "loopback"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if address.is_loopback:
        return "loopback"
    if address.is_private or address.is_link_local or address.is_unspecified:
        return "private"
    return None


def carrier_is_local(settings: Settings) -> bool:
    """The carrier's ``apiBaseUrl`` is itself loopback/private: a local emulator
    or private gateway, which can reach a local webhook."""
    api = settings.get(f"{settings.provider}.apiBaseUrl")
    if not isinstance(api, str) or not api:
        return False
    return _address_space(urlsplit(api).hostname or "") is not None


def public_url_problem(settings: Settings, url: str) -> str | None:
    """Why ``url`` cannot be given to this carrier, or None (DESIGN §4).

    Real carriers cannot reach loopback or private space, nor a tailnet-only
    Tailscale serve — unless their own ``apiBaseUrl`` lives there too. The mock
    carrier runs on this machine and accepts anything.
    """
    provider = settings.provider
    if provider == "mock":
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"the public webhook URL {url!r} is not an http(s) URL"
    if carrier_is_local(settings):
        return None
    if exposure(settings) == "tailscale-serve":
        return (f"Tailscale serve is reachable only inside your tailnet, so {provider} cannot "
                "reach the webhook; use tunnel.provider tailscale-funnel or ngrok, or set publicUrl")
    space = _address_space(parts.hostname)
    if space is not None:
        return (f"the public webhook URL {url} is in {space} address space, which {provider} "
                "cannot reach; set publicUrl, or tunnel.provider ngrok or tailscale-funnel")
    return None


def status_callback_url(public_url: str) -> str:
    """What operators give inbound numbers as the status callback (DESIGN §8)."""
    return f"{public_url}{'&' if '?' in public_url else '?'}type=status"


# ---------------------------------------------------------------- the checks

def run_checks(settings: Settings) -> list[Check]:
    """Every readiness check, in the order of ``CHECK_NAMES``."""
    return [
        _config(settings),
        _credentials(settings),
        _exposure(settings),
        _audio(settings),
        _flows(settings),
        _reaper(settings),
    ]


def _config(settings: Settings) -> Check:
    source = settings.source or "<built-in defaults>"
    if settings.get("enabled", True) is False:
        return Check("config", False, f"{source}: the voice-call plugin is disabled (enabled: false)")
    detail = f"{source} (provider {settings.provider})"
    count = len(settings.warnings)
    if count:
        noun = "warning" if count == 1 else "warnings"
        detail += f"; {count} {noun}, first: {settings.warnings[0].message}"
    return Check("config", True, detail)


def _credentials(settings: Settings) -> Check:
    from voicecall.providers.base import REGISTRY

    from .config.semantic import CREDENTIALS

    provider = settings.provider
    if provider not in REGISTRY:
        return Check("provider-credentials", False,
                     f"provider {provider} is not available in this version "
                     f"(available: {', '.join(sorted(REGISTRY))})")
    if provider == "mock":
        return Check("provider-credentials", True, "mock carrier: no credentials needed")
    needed = [(".".join(map(str, path)), env) for path, env, _what in CREDENTIALS.get(provider, [])]
    missing = [f"{key} (or {env})" for key, env in needed if not settings.get(key)]
    if provider == "telnyx" and not settings.get("telnyx.publicKey") \
            and not settings.get("skipSignatureVerification"):
        missing.append("telnyx.publicKey (or TELNYX_PUBLIC_KEY)")
    if not settings.get("fromNumber"):
        missing.append("fromNumber")
    if missing:
        return Check("provider-credentials", False, f"{provider}: missing {', '.join(missing)}")
    names = [key.rsplit(".", 1)[-1] for key, _env in needed]
    return Check("provider-credentials", True,
                 f"{provider}: {', '.join(names)} set; calls from {settings.get('fromNumber')}")


def _exposure(settings: Settings) -> Check:
    how = exposure(settings)
    real = settings.provider != "mock"
    if how in ("publicUrl", "local"):
        url = str(settings.get("publicUrl")) if how == "publicUrl" else local_webhook_url(settings)
        problem = public_url_problem(settings, url)
        if problem:
            return Check("webhook-exposure", False, problem)
        where = "publicUrl" if how == "publicUrl" else "serve (no publicUrl or tunnel)"
        return Check("webhook-exposure", True,
                     f"{url} from {where}; inbound status callback: {status_callback_url(url)}")
    if how == "tailscale-serve" and real:
        problem = public_url_problem(settings, "https://tailnet.invalid/")
        if problem:
            return Check("webhook-exposure", False, problem)
    tool = "ngrok" if how == "ngrok" else "tailscale"
    if shutil.which(tool) is None:
        site = "https://ngrok.com/download" if tool == "ngrok" else "https://tailscale.com/download"
        return Check("webhook-exposure", False,
                     f"tunnel {how} needs the {tool} CLI, which is not installed ({site})")
    if how == "ngrok" and real and not settings.get("tunnel.ngrokAuthToken"):
        return Check("webhook-exposure", True,
                     "ngrok tunnel started by serve; no tunnel.ngrokAuthToken (or NGROK_AUTHTOKEN) "
                     "set, so the agent's own configured token is used")
    return Check("webhook-exposure", True,
                 f"{how} tunnel started by serve; its URL is printed at start")


def _audio(settings: Settings) -> Check:
    streaming = bool(settings.get("streaming.enabled", False))
    realtime = bool(settings.get("realtime.enabled", False))
    if streaming and realtime:
        return Check("audio-mode", False, "choose one audio mode: streaming and realtime are both enabled")
    if streaming or realtime:
        which = "media streaming" if streaming else "realtime voice"
        return Check("audio-mode", False, f"{which} is not supported yet; set enabled: false")
    return Check("audio-mode", True, "carrier voice and speech recognition (no media stream)")


def _flows(settings: Settings) -> Check:
    from .flows import FlowLibrary

    library = FlowLibrary([str(p) for p in settings.get("flows.paths", ()) or ()])
    errors = [p for p in library.problems() if not p.warning]
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return Check("flows", False, f"{errors[0].format()}{more}")
    names = library.names()
    for number, route in (settings.get("numbers", {}) or {}).items():
        if route.get("flow") and route["flow"] not in names:
            return Check("flows", False, f"numbers[{number}].flow: unknown flow {route['flow']!r}")
    missing = [n for n in BUILTIN_FLOWS if n not in names]
    if missing:
        return Check("flows", False, f"built-in flows missing: {', '.join(missing)}")
    return Check("flows", True, f"{len(names)} flows: {', '.join(names)}")


def _reaper(settings: Settings) -> Check:
    stale = int(settings.get("staleCallReaperSeconds", 0))
    cap = int(settings.get("maxDurationSeconds", 300))
    if stale == 0:
        advice = "" if settings.provider == "mock" else f" ({REAPER_RECOMMENDED})"
        return Check("reaper", True, f"stale-call reaping is off{advice}; calls end after {cap} s")
    return Check("reaper", True, f"unanswered calls silent for {stale} s are reaped; calls end after {cap} s")
