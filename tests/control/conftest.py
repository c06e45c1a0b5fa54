"""Fixtures for the control plane: a real VoiceCallRuntime (mock carrier, a
scaled clock: one call second is 10 ms) with its control listener on
loopback, driven over HTTP with aiohttp."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from voicecall.engine.client import read_token
from voicecall.engine.clock import ScaledClock
from voicecall.engine.config import default_settings
from voicecall.engine.runtime import VoiceCallRuntime

SCALE = 0.01
BASE: dict[str, Any] = {
    "serve": {"port": 0},
    "control": {"port": 0},
    "maxConcurrentCalls": 2,
    # Ten virtual minutes of ringing (6 s real): a "no-answer" callee keeps a call live.
    "ringTimeoutMs": 600_000,
    "outbound": {"notifyHangupDelaySec": 0},
    # An hour of call (36 s real): no call hits its time limit during a test.
    "maxDurationSeconds": 3600,
}


@dataclass
class Control:
    rt: VoiceCallRuntime
    base: str
    token: str
    http: aiohttp.ClientSession

    async def post(self, body: Any, *, token: str | None = None, raw: bytes | None = None) -> tuple[int, Any]:
        token = self.token if token is None else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        data = raw if raw is not None else json.dumps(body).encode()
        async with self.http.post(self.base + "/rpc", data=data, headers=headers) as resp:
            text = await resp.text()
            return resp.status, (json.loads(text) if text else None)

    async def rpc(self, method: str, params: Any = None, **extra: Any) -> dict[str, Any]:
        body = {"jsonrpc": "2.0", "id": 7, "method": method, **extra}
        if params is not None:
            body["params"] = params
        status, doc = await self.post(body)
        assert status == 200, doc
        return doc  # type: ignore[no-any-return]

    async def result(self, method: str, params: Any = None) -> Any:
        doc = await self.rpc(method, params)
        assert "error" not in doc, doc["error"]
        return doc["result"]

    async def error(self, method: str, params: Any = None) -> dict[str, Any]:
        doc = await self.rpc(method, params)
        assert "result" not in doc, doc
        return doc["error"]  # type: ignore[no-any-return]

    async def until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "condition not reached in time"
            await asyncio.sleep(0.005)

    def carrier_call(self, call_id: str) -> Any:
        pid = self.rt.sessions[call_id].record.provider_call_id
        return self.rt.mock_carrier.calls[pid]

    async def gather_open(self, call_id: str) -> None:
        """Wait until the carrier runs a document holding a gather (the caller is being listened to)."""
        await self.until(lambda: call_id in self.rt.sessions and self.rt.sessions[call_id].record.provider_call_id
                         in self.rt.mock_carrier.calls and any(
                             e.kind == "document" and "gather" in str(e.detail)
                             for e in self.carrier_call(call_id).log))


@contextlib.asynccontextmanager
async def running(tmp_path: Path, **overrides: Any) -> AsyncIterator[Control]:
    settings = default_settings().replace(store=tmp_path, **{**BASE, **overrides})
    rt = VoiceCallRuntime(settings, clock=ScaledClock(SCALE))
    await rt.start(control=True)
    try:
        token = read_token(settings)
        assert token
        async with aiohttp.ClientSession() as http:
            yield Control(rt, f"http://127.0.0.1:{rt.control_port}", token, http)
    finally:
        await rt.stop()


@pytest.fixture
async def ctl(tmp_path: Path) -> AsyncIterator[Control]:
    async with running(tmp_path) as c:
        yield c
