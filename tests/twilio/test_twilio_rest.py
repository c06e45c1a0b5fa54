"""The official SDK, through TwilioProvider, against the emulator's REST API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from twilio_support import FakeWebhook, created, heard, make_settings

from voicecall.engine.errors import ProviderError
from voicecall.engine.program import Program, Step
from voicecall.providers.base import CallRef, CallUrls, PlaceRequest
from voicecall.providers.callee import Callee
from voicecall.providers.twilio import TwilioEmulator, TwilioProvider
from voicecall.providers.twilio.client import TwilioRest

HANGUP = '<?xml version="1.0" encoding="UTF-8"?><Response><Hangup/></Response>'
HOLD = '<?xml version="1.0" encoding="UTF-8"?><Response><Pause length="300"/></Response>'


@pytest.fixture
async def provider(emulator: TwilioEmulator) -> AsyncIterator[TwilioProvider]:
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)

    p = TwilioProvider(make_settings(apiBaseUrl=emulator.base_url), sleep=sleep)
    p.delays = delays
    yield p
    await p.close()


def place_request(webhook: FakeWebhook, **kw: object) -> PlaceRequest:
    return PlaceRequest(call_id="c1", from_number="+15005550006", to_number="+14155551212",
                        urls=CallUrls(webhook.url, "c1"), **kw)


async def test_place_with_url_and_status_callbacks(provider: TwilioProvider, emulator: TwilioEmulator,
                                                   webhook: FakeWebhook) -> None:
    webhook.replies["voice"] = HANGUP
    sid = await provider.place(place_request(webhook, ring_timeout_s=30, send_digits="1w2"))
    assert sid.startswith("CA") and len(sid) == 34
    form = created(emulator, sid)
    assert form["StatusCallbackEvent"] == ["initiated", "ringing", "answered", "completed"]
    assert form["Url"] == [webhook.hook("voice")] and form["StatusCallback"] == [webhook.hook("status")]
    assert form["StatusCallbackMethod"] == ["POST"] and form["Method"] == ["POST"]
    assert (form["Timeout"], form["TimeLimit"], form["SendDigits"]) == (["30"], ["300"], ["1w2"])
    assert "Twiml" not in form
    final = await emulator.wait_ended(sid, 5)
    assert final["status"] == "completed"
    assert [p["CallStatus"] for p in webhook.of("status")] == ["initiated", "ringing", "in-progress", "completed"]
    assert webhook.of("voice")[0]["CallStatus"] == "in-progress"
    assert webhook.bad_signatures == 0
    assert await provider.fetch_status(CallRef("c1", sid)) == "completed"


async def test_place_with_inline_opening_twiml(provider: TwilioProvider, emulator: TwilioEmulator,
                                               webhook: FakeWebhook) -> None:
    opening = Program("answered", (Step("say", {"text": "Your table is ready"}), Step("pause", {"seconds": 1}),
                                   Step("hangup", {})))
    sid = await provider.place(place_request(webhook, opening=opening))
    form = created(emulator, sid)
    assert "Url" not in form and form["Twiml"][0].endswith("<Hangup/></Response>")
    await emulator.wait_ended(sid, 5)
    assert webhook.of("voice") == []          # nothing fetched: the words were inline
    assert heard(emulator, sid) == ["Your table is ready"]


async def test_opening_too_long_for_inline_is_fetched(provider: TwilioProvider, emulator: TwilioEmulator,
                                                      webhook: FakeWebhook) -> None:
    webhook.replies["voice"] = HANGUP
    opening = Program("answered", (Step("say", {"text": "word " * 900}), Step("hangup", {})))
    sid = await provider.place(place_request(webhook, opening=opening))
    assert "Url" in created(emulator, sid)
    await emulator.wait_ended(sid, 5)


async def test_push_replaces_the_running_document_and_hangup(provider: TwilioProvider, emulator: TwilioEmulator,
                                                             webhook: FakeWebhook) -> None:
    webhook.replies["voice"] = HOLD
    sid = await provider.place(place_request(webhook))
    ref = CallRef("c1", sid)
    for _ in range(200):
        if webhook.of("voice"):
            break
        await asyncio.sleep(0.01)
    await provider.push(ref, Program("s", (Step("say", {"text": "One moment"}), Step("keepalive", {"seconds": 300}))),
                        CallUrls(webhook.url, "c1"))
    for _ in range(200):
        if heard(emulator, sid):
            break
        await asyncio.sleep(0.01)
    assert await provider.hangup(ref) is True
    final = await emulator.wait_ended(sid, 5)
    assert final["status"] == "completed"
    kinds = [e.kind + (":" + next(iter(e.detail)) if e.kind == "rest" else "") for e in emulator.log(sid)]
    assert kinds.index("rest:twiml") < kinds.index("heard") < kinds.index("rest:status")
    await provider.hangup(ref)                 # already over: still fine
    assert await provider.hangup(CallRef("c2", "CA" + "f" * 32)) is False   # 20404: Twilio forgot it
    assert await provider.hangup(CallRef("c3", None)) is False


async def test_auth_failure_names_20003(emulator: TwilioEmulator, webhook: FakeWebhook) -> None:
    bad = TwilioProvider(make_settings(apiBaseUrl=emulator.base_url, authToken="f" * 32))
    try:
        with pytest.raises(ProviderError, match="Twilio error 20003: Authenticate") as info:
            await bad.place(place_request(webhook))
        assert (info.value.status, info.value.carrier_code, info.value.retryable) == (401, 20003, False)
        assert "f" * 32 not in str(info.value)
    finally:
        await bad.close()


async def test_bad_to_names_21211(provider: TwilioProvider, emulator: TwilioEmulator, webhook: FakeWebhook) -> None:
    request = PlaceRequest(call_id="c1", from_number="+15005550006", to_number="+1555",
                           urls=CallUrls(webhook.url, "c1"))
    with pytest.raises(ProviderError) as info:
        await provider.place(request)
    assert str(info.value).startswith("Twilio error 21211: The 'To' number +1555 is not a valid phone number.")
    assert emulator.calls == {}


async def test_fetch_and_hangup_retry_5xx_but_create_does_not(provider: TwilioProvider, emulator: TwilioEmulator,
                                                              webhook: FakeWebhook) -> None:
    webhook.replies["voice"] = HOLD
    sid = await provider.place(place_request(webhook))
    ref = CallRef("c1", sid)
    emulator.fail_next(2)
    assert await provider.fetch_status(ref) in ("initiated", "ringing", "in-progress")
    assert provider.delays == [0.25, 1.0]
    emulator.fail_next(3, status=503)
    with pytest.raises(ProviderError, match="Twilio error 20500") as info:
        await provider.fetch_status(ref)
    assert info.value.retryable
    emulator.fail_next(1, status=502)
    await provider.hangup(ref)
    assert (await emulator.wait_ended(sid, 5))["status"] in ("completed", "canceled")
    posts = len([r for r in emulator.requests if r[0] == "POST" and r[1].endswith("/Calls.json")])
    emulator.fail_next(1)
    with pytest.raises(ProviderError, match="20500") as info:
        await provider.place(place_request(webhook))
    assert info.value.retryable is False
    assert len([r for r in emulator.requests if r[0] == "POST" and r[1].endswith("/Calls.json")]) == posts + 1


async def test_create_timeout_is_not_retried() -> None:
    hits: list[str] = []
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        hits.append(request.path)
        await release.wait()
        return web.Response(status=500)

    app = web.Application()
    app.router.add_post("/{tail:.*}", slow)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    p = TwilioProvider(make_settings(apiBaseUrl=base), timeout_s=0.2)
    try:
        with pytest.raises(ProviderError, match="did not answer create call") as info:
            await p.place(PlaceRequest(call_id="c1", from_number="+15005550006", to_number="+14155551212",
                                       urls=CallUrls("https://e.com/hook", "c1")))
        assert info.value.retryable is False and len(hits) == 1
    finally:
        release.set()
        await p.close()
        await runner.cleanup()


async def test_regions_and_base_url() -> None:
    for region, host in (("ie1", "api.dublin.ie1.twilio.com"), ("au1", "api.sydney.au1.twilio.com"),
                         ("us1", "api.twilio.com")):
        rest = TwilioRest("AC" + "0" * 32, "t", region=region)
        client = rest._sdk()
        assert client.get_hostname("https://api.twilio.com/2010-04-01/x") == f"https://{host}/2010-04-01/x"
        await rest.close()
    rest = TwilioRest("AC" + "0" * 32, "t", region="ie1", api_base_url="http://127.0.0.1:9/")
    client = rest._sdk()
    assert client.api.absolute_url("2010-04-01/x") == "http://127.0.0.1:9/2010-04-01/x"
    assert client.get_hostname("http://127.0.0.1:9/x") == "http://127.0.0.1:9/x"
    await rest.close()
    with pytest.raises(ProviderError, match="unknown Twilio region"):
        TwilioRest("AC1", "t", region="mars1")


async def test_ring_timeout_is_clamped(provider: TwilioProvider, emulator: TwilioEmulator,
                                       webhook: FakeWebhook, caplog: pytest.LogCaptureFixture) -> None:
    emulator.set_callee("+14155551212", Callee(ring="busy"))
    sid = await provider.place(place_request(webhook, ring_timeout_s=900))
    assert created(emulator, sid)["Timeout"] == ["600"]
    assert "outside Twilio's range" in caplog.text
    assert (await emulator.wait_ended(sid, 5))["status"] == "busy"
