"""The semantic pass: what a schema cannot say.

Runs on the plugin config after the schema pass, with defaults filled, the
OpenClaw ``messages.tts`` merged and environment secrets merged in. Returns
``Issue``s with paths relative to the plugin config; the loader locates them.
No message ever contains a secret's value.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from voicecall.engine.config.schema import Issue, Path

# provider -> [(config path, env var, what it is)]
CREDENTIALS: dict[str, list[tuple[Path, str, str]]] = {
    "twilio": [(("twilio", "accountSid"), "TWILIO_ACCOUNT_SID", "an account SID"),
               (("twilio", "authToken"), "TWILIO_AUTH_TOKEN", "an auth token")],
    "telnyx": [(("telnyx", "apiKey"), "TELNYX_API_KEY", "an API key"),
               (("telnyx", "connectionId"), "TELNYX_CONNECTION_ID", "a connection ID")],
    "plivo": [(("plivo", "authId"), "PLIVO_AUTH_ID", "an auth ID"),
              (("plivo", "authToken"), "PLIVO_AUTH_TOKEN", "an auth token")],
}

# Core OpenClaw TTS keys with no meaning for phone calls.
IGNORED_TTS_KEYS = ("auto", "enabled", "mode", "summaryModel", "modelOverrides", "prefsPath",
                    "maxTextLength", "timeoutMs")
PCM_LESS_TTS = ("edge", "microsoft")
FUNNEL_PORTS = (443, 8443, 10000)
_PROVIDER: Path = ("provider",)


def is_local_host(host: str | None) -> bool:
    """Loopback or private address space (where a carrier cannot reach, but a
    local emulator or private gateway can)."""
    if not host:
        return False
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local


def base_url_problem(value: str, *, path_allowed: bool = False) -> str | None:
    """Why ``value`` is not ``scheme://host[:port]`` (https unless local), or None.

    Carrier ``apiBaseUrl``s take no path (DESIGN §8: the client appends the
    carrier's API paths). Model-API ``baseUrl``s may carry one, as the OpenAI
    and ElevenLabs SDKs expect (``https://proxy.example.com/v1``)."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be a URL like https://api.example.com"
    try:
        parts.port  # noqa: B018 -- raises ValueError on a bad port
    except ValueError:
        return "has an invalid port"
    if parts.query or parts.fragment:
        return "must not have a query or fragment"
    if parts.path not in ("", "/") and not path_allowed:
        return "must be scheme://host[:port] with no path; the client adds the API paths"
    if parts.username or parts.password:
        return "must not carry credentials; use the apiKey/authToken keys"
    if parts.scheme == "http" and not is_local_host(parts.hostname):
        return "must use https unless the host is loopback or private"
    return None


def check(data: dict[str, Any], own_tts: Mapping[str, Any]) -> list[Issue]:
    """Every semantic problem and warning in the merged plugin config.

    ``own_tts`` is the plugin's own ``tts`` as written (before ``messages.tts``
    was merged under it): core TTS keys there are flagged, OpenClaw's are not.
    Normalises phone numbers in ``data`` to E.164 as a side effect.
    """
    issues: list[Issue] = []
    issues += _credentials(data)
    issues += _numbers(data)
    issues += _audio(data, own_tts)
    issues += _exposure(data)
    issues += _urls(data, ())
    issues += _policy(data)
    return issues


def _credentials(data: dict[str, Any]) -> list[Issue]:
    provider = data.get("provider", "mock")
    if not data.get("enabled", True) or provider == "mock":
        return []
    issues = []
    for path, env, what in CREDENTIALS.get(provider, []):
        if not data.get(str(path[0]), {}).get(path[1]):
            issues.append(Issue(path, f"provider {provider} needs {what}: set "
                                      f"{'.'.join(map(str, path))} or {env}", line_of=_PROVIDER))
    if provider == "telnyx" and not data["telnyx"].get("publicKey") \
            and not data.get("skipSignatureVerification"):
        issues.append(Issue(("telnyx", "publicKey"),
                            "provider telnyx needs the webhook public key to verify events: set "
                            "telnyx.publicKey or TELNYX_PUBLIC_KEY (skipSignatureVerification: "
                            "true only for local testing)", line_of=_PROVIDER))
    if not data.get("fromNumber"):
        env = " or TWILIO_FROM_NUMBER" if provider == "twilio" else ""
        issues.append(Issue(("fromNumber",), f"provider {provider} needs fromNumber, the E.164 "
                                             f"number calls come from: set fromNumber{env}",
                            line_of=_PROVIDER))
    return issues


def _numbers(data: dict[str, Any]) -> list[Issue]:
    from voicecall.engine.inbound import normalise_e164

    issues = []

    def normal(path: Path, value: str) -> str:
        fixed = normalise_e164(value)
        if fixed is None:
            issues.append(Issue(path, f"{value!r} is not a possible phone number"))
            return value
        return fixed

    for key in ("fromNumber", "toNumber"):
        if isinstance(data.get(key), str):
            data[key] = normal((key,), data[key])
    data["allowFrom"] = [normal(("allowFrom", i), v) for i, v in enumerate(data["allowFrom"])]
    data["numbers"] = {normal(("numbers", k), k): v for k, v in data["numbers"].items()}
    return issues


def _audio(data: dict[str, Any], own_tts: Mapping[str, Any]) -> list[Issue]:
    issues = []
    if data["streaming"].get("enabled"):
        where = "" if data.get("provider") == "twilio" else " (and it will need provider twilio)"
        issues.append(Issue(("streaming", "enabled"),
                            f"media streaming is not supported yet{where}; remove it or set "
                            "enabled: false (calls use the carrier's own voice and speech "
                            "recognition)"))
    if data["realtime"].get("enabled"):
        issues.append(Issue(("realtime", "enabled"),
                            "realtime voice is not supported yet; remove it or set enabled: false"))
    tts_blocks: list[tuple[Path, Mapping[str, Any]]] = [(("tts",), data.get("tts", {}))]
    for number, route in data["numbers"].items():
        if isinstance(route.get("tts"), Mapping):
            tts_blocks.append((("numbers", number, "tts"), route["tts"]))
    for path, tts in tts_blocks:
        if tts.get("provider") in PCM_LESS_TTS:
            issues.append(Issue((*path, "provider"),
                                f"tts provider {tts['provider']!r} is ignored for calls "
                                "(telephony needs PCM audio); calls use the carrier's voice",
                                warning=True))
    for path, tts in [(("tts",), own_tts), *tts_blocks[1:]]:
        for key in IGNORED_TTS_KEYS:
            if key in tts:
                issues.append(Issue((*path, key), f"core TTS key {key!r} is ignored for calls",
                                    warning=True))
        for key in PCM_LESS_TTS:
            if key in tts:
                issues.append(Issue((*path, key), f"tts.{key} settings are ignored for calls "
                                                  "(telephony needs PCM audio)", warning=True))
    return issues


def _exposure(data: dict[str, Any]) -> list[Issue]:
    issues = []
    public = data.get("publicUrl")
    if isinstance(public, str):
        parts = urlsplit(public)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            issues.append(Issue(("publicUrl",), "must be an http(s) URL, e.g. "
                                                "https://voice.example.com/voice/webhook"))
        elif parts.path in ("", "/") and data["serve"]["path"] != "/":
            host = parts.hostname + (f":{parts.port}" if parts.port else "")
            issues.append(Issue(("publicUrl",), "must include the webhook path, e.g. "
                                                f"{parts.scheme}://{host}{data['serve']['path']}"))
    tunnel, mode = data["tunnel"]["provider"], data["tailscale"]["mode"]
    if mode != "off" and tunnel != "none" and tunnel != f"tailscale-{mode}":
        issues.append(Issue(("tailscale", "mode"),
                            f"conflicts with tunnel.provider {tunnel!r}: choose one way to expose "
                            "the webhook (tunnel.provider is preferred)"))
    funnel = mode == "funnel" or tunnel == "tailscale-funnel"
    port = data["tailscale"]["port"]
    if funnel and port not in FUNNEL_PORTS:
        issues.append(Issue(("tailscale", "port"),
                            f"Tailscale Funnel only serves ports 443, 8443 or 10000, got {port}"))
    if tunnel != "ngrok":
        for key in ("ngrokDomain", "allowNgrokFreeTierLoopbackBypass"):
            if data["tunnel"].get(key):
                issues.append(Issue(("tunnel", key), "has no effect unless "
                                                     "tunnel.provider is 'ngrok'", warning=True))
    if data.get("skipSignatureVerification"):
        issues.append(Issue(("skipSignatureVerification",),
                            "webhook signatures are not checked; anyone who finds the "
                            "URL can forge carrier events (local testing only)", warning=True))
    serve_port, control_port = data["serve"]["port"], data["control"]["port"]
    if serve_port and serve_port == control_port:
        issues.append(Issue(("control", "port"), f"must differ from serve.port ({serve_port}): "
                                                 "the control API must never share the webhook "
                                                 "port"))
    return issues


def _urls(node: Any, path: Path) -> list[Issue]:
    issues: list[Issue] = []
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "realtime":
                continue  # accepted for compatibility only; never used
            if key in ("apiBaseUrl", "baseUrl") and isinstance(value, str):
                problem = base_url_problem(value, path_allowed=key == "baseUrl")
                if problem:
                    issues.append(Issue((*path, key), problem))
            else:
                issues += _urls(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            issues += _urls(value, (*path, index))
    return issues


def _policy(data: dict[str, Any]) -> list[Issue]:
    issues = []
    policy = data["inboundPolicy"]
    if policy in ("allowlist", "pairing") and not data["allowFrom"]:
        issues.append(Issue(("allowFrom",), f"inboundPolicy is {policy!r} but allowFrom "
                                            "is empty, so every inbound call is refused",
                            warning=True))
    if policy in ("disabled", "open") and data["allowFrom"]:
        issues.append(Issue(("allowFrom",), f"ignored while inboundPolicy is {policy!r}",
                            warning=True))
    if data["staleCallReaperSeconds"] == 0 and data.get("provider") != "mock":
        issues.append(Issue(("staleCallReaperSeconds",),
                            "0 turns the stale-call reaper off; calls whose carrier "
                            "events stop are never cleaned up (120-300 recommended)",
                            warning=True))
    return issues
