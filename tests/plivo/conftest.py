"""Fixtures: a running Plivo emulator and a fake webhook server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from plivo_support import AUTH_ID, SCALE, TOKEN, FakeWebhook

from voicecall.providers.plivo.emulator import PlivoEmulator


@pytest.fixture
async def webhook() -> AsyncIterator[FakeWebhook]:
    fake = FakeWebhook()
    app = web.Application()
    app.router.add_post("/voice/webhook", fake.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.url = f"http://127.0.0.1:{runner.addresses[0][1]}/voice/webhook"
    yield fake
    await runner.cleanup()


@pytest.fixture
async def emulator() -> AsyncIterator[PlivoEmulator]:
    emu = PlivoEmulator(AUTH_ID, TOKEN, time_scale=SCALE)
    await emu.start()
    yield emu
    await emu.stop()
    await asyncio.sleep(0)
