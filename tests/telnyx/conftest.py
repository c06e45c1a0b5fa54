"""Fixtures: a running Telnyx emulator, a provider pointed at it, a fake webhook."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from telnyx_support import API_KEY, SCALE, FakeWebhook, make_settings

from voicecall.providers.telnyx import TelnyxProvider
from voicecall.providers.telnyx.emulator import TelnyxEmulator


@pytest.fixture
async def emulator() -> AsyncIterator[TelnyxEmulator]:
    emu = TelnyxEmulator(API_KEY, time_scale=SCALE)
    await emu.start()
    yield emu
    await emu.stop()
    await asyncio.sleep(0)


@pytest.fixture
async def provider(emulator: TelnyxEmulator, tmp_path: Path) -> AsyncIterator[TelnyxProvider]:
    prov = TelnyxProvider(make_settings(emulator.public_key_b64, emulator.base_url), store_dir=tmp_path)
    yield prov
    await prov.close()


@pytest.fixture
async def webhook(provider: TelnyxProvider) -> AsyncIterator[FakeWebhook]:
    fake = FakeWebhook(provider=provider)
    app = web.Application()
    app.router.add_post("/voice/webhook", fake.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    fake.url = f"http://127.0.0.1:{runner.addresses[0][1]}/voice/webhook"
    yield fake
    await runner.cleanup()
