"""A real runtime (mock carrier, loopback webhook server, SQLite) per test,
plus a way to post signed mock-carrier webhooks the way the carrier does."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from voicecall.engine.clock import ScaledClock
from voicecall.engine.config import default_settings
from voicecall.engine.runtime import VoiceCallRuntime
from voicecall.engine.security import load_or_create_mock_secret, mock_headers

SCALE = 0.01


class Rig:
    def __init__(self, runtime: VoiceCallRuntime, carrier: Any = None):
        self.runtime = runtime
        self.secret = load_or_create_mock_secret(runtime.settings.store_dir)
        self._carrier = carrier

    @property
    def carrier(self) -> Any:
        return self._carrier or self.runtime.mock_carrier

    def url(self, **query: str) -> str:
        from urllib.parse import urlencode

        return f"{self.runtime.public_url}?{urlencode(query)}" if query else self.runtime.public_url

    async def post(self, body: dict[str, Any], *, headers: dict[str, str] | None = None, signed: bool = True,
                   method: str = "POST", url: str | None = None, body_url: str | None = None,
                   **query: str) -> tuple[int, str]:
        """Post like the mock carrier: JSON body naming the URL it was sent to, signed."""
        target = url or self.url(**query)
        payload = json.dumps({**body, "url": body_url or target}).encode()
        sent = {"Content-Type": "application/json"}
        if signed:
            sent.update(mock_headers(self.secret, payload, self.runtime.clock.now()))
        sent.update(headers or {})
        async with aiohttp.ClientSession() as http, http.request(method, target, data=payload, headers=sent) as r:
            return r.status, await r.text()

    async def events(self, call_id: str) -> list[dict[str, Any]]:
        return await self.runtime.store.events(call_id)


@pytest.fixture
async def rig_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    started: list[VoiceCallRuntime] = []

    async def make(store: Path | None = None, carrier: Any = None, **config: Any) -> Rig:
        """``carrier``: a MockCarrier of the test's own, which outlives runtime restarts."""
        config = {"maxConcurrentCalls": 5, **config}
        settings = default_settings().replace(store=str(store or tmp_path / "store"), serve={"port": 0}, **config)
        options = {"api_base_url": carrier.base_url} if carrier is not None else {}
        runtime = VoiceCallRuntime(settings, clock=carrier.clock if carrier else ScaledClock(SCALE),
                                   provider_options=options)
        await runtime.start()
        started.append(runtime)
        return Rig(runtime, carrier)

    yield make
    for runtime in reversed(started):
        if runtime._store is not None:
            await runtime.stop()


@pytest.fixture
async def rig(rig_factory: Callable[..., Any]) -> Rig:
    return await rig_factory()
