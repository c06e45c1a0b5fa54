"""Test support: settings, request builders, and a fake webhook that checks every
Plivo V3 signature with the SDK's own validator. (Named uniquely: test dirs are not packages.)"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import web
from plivo.utils import validate_signature, validate_v3_signature

from voicecall.engine.config.settings import Settings
from voicecall.providers.base import WebhookRequest

AUTH_ID = "MAZDQ1ZWE4NTK3MTQ0ZW"
TOKEN = "MzY4ZjQ3YjE4ZWI5NjY1ZjM4YzM3ZmI4NjE4ZDUx"
SCALE = 0.01
UUID = "d0a87a1a-b0e9-4ab2-ac07-c22ee87cd04a"


def make_settings(**plivo: Any) -> Settings:
    return Settings({
        "provider": "plivo", "fromNumber": "+15550000000", "maxDurationSeconds": 300,
        "ringTimeoutMs": 30000, "plivo": {"authId": AUTH_ID, "authToken": TOKEN, **plivo},
    })


def request(url: str, form: dict[str, str] | None = None, headers: dict[str, str] | None = None,
            method: str = "POST") -> WebhookRequest:
    """A WebhookRequest as the server hands it to the provider."""
    form = form or {}
    parts = urlsplit(url)
    from urllib.parse import parse_qsl

    return WebhookRequest(method=method, url=url, path=parts.path,
                          query=tuple(parse_qsl(parts.query, keep_blank_values=True)),
                          headers={k.lower(): v for k, v in (headers or {}).items()},
                          body=urlencode(form).encode(), form=tuple(form.items()))


Reply = str | Callable[[dict[str, str]], str]


@dataclass
class FakeWebhook:
    """Answers each webhook ``type`` with scripted XML; records every request."""

    replies: dict[str, Reply] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    bad_signatures: int = 0
    url: str = ""

    def of(self, kind: str) -> list[dict[str, str]]:
        return [params for t, params in self.requests if t == kind]

    async def handle(self, request: web.Request) -> web.Response:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        signed_url = f"http://{request.host}{request.raw_path}"
        if not validate_v3_signature("POST", signed_url, request.headers.get("X-Plivo-Signature-V3-Nonce", ""),
                                     TOKEN, request.headers.get("X-Plivo-Signature-V3", ""), form) or \
                not validate_signature(signed_url, request.headers.get("X-Plivo-Signature-V2-Nonce", ""),
                                       request.headers.get("X-Plivo-Signature-V2", ""), TOKEN):
            self.bad_signatures += 1
            return web.Response(status=401)
        kind = request.query.get("type", "voice")
        self.requests.append((kind, form))
        reply = self.replies.get(kind, "<Response/>")
        body = reply(form) if callable(reply) else reply
        return web.Response(text=body, content_type="text/xml")

    def hook(self, kind: str, call_id: str = "c1", token: str | None = None) -> str:
        extra = f"&amp;token={token}" if token else ""
        return f"{self.url}?callId={call_id}&amp;type={kind}{extra}"


def heard(emulator: Any, uuid: str) -> list[str]:
    return [e.detail for e in emulator.log(uuid) if e.kind == "heard"]
