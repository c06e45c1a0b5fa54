"""Test support: settings, and a fake webhook that verifies every Telnyx event
with our verifier and queues the parsed events. (Named uniquely: test dirs
are not packages.)"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from voicecall.engine.clock import RealClock
from voicecall.engine.config.settings import Settings
from voicecall.engine.errors import SignatureError
from voicecall.engine.events import Event
from voicecall.providers.base import WebhookRequest
from voicecall.providers.telnyx import TelnyxProvider

API_KEY = "KEY0123456789ABCDEF_test"
CONNECTION_ID = "1234567890"
SCALE = 0.01


def make_settings(public_key: str = "", api_base_url: str = "", **extra: Any) -> Settings:
    telnyx = {"apiKey": API_KEY, "connectionId": CONNECTION_ID, "publicKey": public_key}
    if api_base_url:
        telnyx["apiBaseUrl"] = api_base_url
    return Settings({"provider": "telnyx", "fromNumber": "+15550001000", "maxDurationSeconds": 300,
                     "ringTimeoutMs": 30000, "telnyx": telnyx, **extra})


def request(body: bytes, headers: dict[str, str], url: str = "https://example.com/voice/webhook") -> WebhookRequest:
    return WebhookRequest(method="POST", url=url, path="/voice/webhook", query=(),
                          headers={k.lower(): v for k, v in headers.items()}, body=body)


@dataclass
class FakeWebhook:
    """Verifies and parses every delivery with the provider (as the runtime would)."""

    provider: TelnyxProvider | None = None
    url: str = ""
    bodies: list[dict[str, Any]] = field(default_factory=list)
    events: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    bad_signatures: int = 0
    clock: Any = field(default_factory=RealClock)

    async def handle(self, request: web.Request) -> web.Response:
        assert self.provider is not None
        raw = await request.read()
        req = WebhookRequest(method="POST", url=str(request.url), path=request.path,
                             query=tuple(request.query.items()),
                             headers={k.lower(): v for k, v in request.headers.items()}, body=raw)
        try:
            self.provider.verify(req)
        except SignatureError:
            self.bad_signatures += 1
            return web.Response(status=401)
        self.bodies.append(json.loads(raw))
        for event in self.provider.parse(req):
            self.events.put_nowait(event)
        reply = self.provider.ack(req)
        return web.Response(body=reply.body, content_type="application/json")

    def types(self) -> list[str]:
        return [b["data"]["event_type"] for b in self.bodies]

    async def next(self, *types: str, timeout: float = 5.0) -> Event:
        """The next parsed event of one of ``types`` (others are skipped)."""
        async def find() -> Event:
            while True:
                event = await self.events.get()
                if event.type in types:
                    return event
        return await asyncio.wait_for(find(), timeout)
