"""A fake runtime for the mock carrier tests: a real aiohttp webhook on
loopback that checks every request's signature with ``verify_mock``, parses it
with ``MockProvider.parse`` and answers with documents rendered by
``MockProvider.render`` from scripted programs. It stands in for the engine's
server (the far side of the carrier under test) until the runtime lands."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from voicecall.engine.clock import Clock, RealClock
from voicecall.engine.errors import SignatureError
from voicecall.engine.events import Event
from voicecall.engine.program import Program
from voicecall.engine.security import load_or_create_mock_secret, verify_mock
from voicecall.providers.base import CallUrls, WebhookRequest
from voicecall.providers.mock import MockCarrier, MockProvider

SCALE = 0.01                      # one carrier second is 10 ms of test time


@dataclass
class Seen:
    type: str | None
    query: dict[str, str]
    body: dict[str, Any]
    events: list[Event]


class FakeRuntime:
    def __init__(self, secret: bytes, provider: MockProvider, clock: Clock):
        self.secret = secret
        self.clock = clock
        self.provider = provider
        self.seen: list[Seen] = []
        self.refused = 0
        self.replies: dict[str, list[Program | dict[str, Any]]] = {}
        self.url = ""
        self.call_id = "c1"

    def urls(self, call_id: str | None = None) -> CallUrls:
        return CallUrls(self.url, call_id or self.call_id)

    def reply(self, type_: str, *docs: Program | dict[str, Any]) -> None:
        """Queue what the runtime answers to the next requests of ``type_``."""
        self.replies.setdefault(type_, []).extend(docs)

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            verify_mock(self.secret, headers, raw, self.clock.now())
        except SignatureError:
            self.refused += 1
            return web.Response(status=401, text="bad signature")
        req = WebhookRequest("POST", str(request.url), request.path, tuple(request.query.items()), headers, raw)
        events = self.provider.parse(req)
        type_ = request.query.get("type")
        self.seen.append(Seen(type_, dict(request.query), json.loads(raw), events))
        queued = self.replies.get(type_ or "", [])
        if not queued:
            reply = self.provider.ack(req)
        else:
            doc = queued.pop(0)
            if isinstance(doc, Program):
                urls = self.urls(request.query.get("callId") or self.call_id)
                reply = self.provider.render(doc, urls)
            else:
                reply = web.json_response(doc)
                return reply
        return web.Response(body=reply.body, content_type=reply.content_type, status=reply.status)

    def kinds(self) -> list[str]:
        return [f"{s.type}/{s.body['event']}" for s in self.seen]

    def events(self) -> list[Event]:
        return [e for s in self.seen for e in s.events]


@dataclass
class Rig:
    carrier: MockCarrier
    provider: MockProvider
    runtime: FakeRuntime
    secret: bytes

    async def until(self, predicate: Callable[[], bool], timeout: float = 3.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("condition not reached in time")
            await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def make_rig(tmp_path: Path, *, clock: Clock | None = None, time_scale: float = SCALE,
                   **carrier_kw: Any) -> AsyncIterator[Rig]:
    clock = clock or RealClock()
    secret = load_or_create_mock_secret(tmp_path)
    carrier = MockCarrier(secret=carrier_kw.pop("secret", secret), clock=clock, time_scale=time_scale, **carrier_kw)
    base = await carrier.start()
    provider = MockProvider(None, store_dir=tmp_path, clock=clock, api_base_url=base)
    runtime = FakeRuntime(secret, provider, clock)
    app = web.Application()
    app.router.add_post("/voice/webhook", runtime.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    runtime.url = f"http://127.0.0.1:{runner.addresses[0][1]}/voice/webhook"
    try:
        yield Rig(carrier, provider, runtime, secret)
    finally:
        await provider.close()
        await carrier.stop()
        await runner.cleanup()
