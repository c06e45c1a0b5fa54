"""Test support: settings, and a fake webhook that checks every Twilio
signature with the SDK's own validator. (Named uniquely: test dirs are not packages.)"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from twilio.request_validator import RequestValidator

from voicecall.engine.config.settings import Settings

SID = "AC" + "0" * 32
TOKEN = "0123456789abcdef0123456789abcdef"
SCALE = 0.01


def make_settings(**twilio: Any) -> Settings:
    return Settings({
        "provider": "twilio", "fromNumber": "+15005550006", "maxDurationSeconds": 300,
        "ringTimeoutMs": 30000,
        "twilio": {"accountSid": SID, "authToken": TOKEN, "region": "us1", **twilio},
    })


Reply = str | Callable[[dict[str, str]], str]


@dataclass
class FakeWebhook:
    """Answers each webhook ``type`` with scripted TwiML; records every request."""

    replies: dict[str, Reply] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    bad_signatures: int = 0
    failing: set[str] = field(default_factory=set)      # webhook types answered with HTTP 500
    url: str = ""

    def of(self, kind: str) -> list[dict[str, str]]:
        return [params for t, params in self.requests if t == kind]

    async def handle(self, request: web.Request) -> web.Response:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        signed_url = f"http://{request.host}{request.raw_path}"
        if not RequestValidator(TOKEN).validate(signed_url, form, request.headers.get("X-Twilio-Signature", "")):
            self.bad_signatures += 1
            return web.Response(status=401)
        kind = request.query.get("type", "voice")
        self.requests.append((kind, form))
        if kind in self.failing:
            return web.Response(status=500, text="boom")
        reply = self.replies.get(kind, '<?xml version="1.0" encoding="UTF-8"?><Response/>')
        body = reply(form) if callable(reply) else reply
        return web.Response(text=body, content_type="text/xml")

    def hook(self, kind: str, call_id: str = "c1", token: str | None = None) -> str:
        extra = f"&token={token}" if token else ""
        return f"{self.url}?callId={call_id}&type={kind}{extra}"




def created(emulator: Any, sid: str) -> dict[str, list[str]]:
    """The form of the REST create request, as the emulator received it."""
    return next(e.detail["create"] for e in emulator.log(sid) if e.kind == "rest" and "create" in e.detail)


def heard(emulator: Any, sid: str) -> list[str]:
    return [e.detail for e in emulator.log(sid) if e.kind == "heard"]
