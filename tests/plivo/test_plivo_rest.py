"""The official SDK, pointed at the emulator through apiBaseUrl: create,
transfer, hang up, cancel, errors in Plivo's shape, retries only where safe."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from plivo_support import AUTH_ID, TOKEN, FakeWebhook, make_settings

from voicecall.engine.errors import ProviderError
from voicecall.engine.program import Program, Step
from voicecall.providers.base import CallRef, CallUrls, PlaceRequest
from voicecall.providers.callee import Callee
from voicecall.providers.plivo import PlivoProvider
from voicecall.providers.plivo.emulator import PlivoEmulator

sleeps: list[float] = []


async def no_sleep(seconds: float) -> None:
    sleeps.append(seconds)


def provider(emulator: PlivoEmulator, **plivo: Any) -> PlivoProvider:
    return PlivoProvider(make_settings(apiBaseUrl=emulator.base_url, **plivo), sleep=no_sleep)


def place_request(webhook: FakeWebhook, to: str = "+15550001111", **extra: Any) -> PlaceRequest:
    return PlaceRequest(call_id="c1", from_number="+15550000000", to_number=to,
                        urls=CallUrls(webhook.url, "c1"), ring_timeout_s=30, time_limit_s=330, **extra)


def created(emulator: PlivoEmulator, uuid: str) -> dict[str, Any]:
    return next(e.detail["create"] for e in emulator.log(uuid) if e.kind == "rest" and "create" in e.detail)


async def until(predicate: Any, what: str) -> None:
    for _ in range(2000):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


async def test_create_sends_our_urls_and_limits(emulator: PlivoEmulator, webhook: FakeWebhook) -> None:
    webhook.replies["voice"] = '<Response><Speak>Hi</Speak><Hangup/></Response>'
    p = provider(emulator)
    request_uuid = await p.place(place_request(webhook, send_digits="1w2", machine_detection=True))
    body = created(emulator, request_uuid)
    assert body["from"] == "15550000000" and body["to"] == "15550001111"
    assert body["answer_url"] == f"{webhook.url}?callId=c1&type=voice" and body["answer_method"] == "POST"
    assert body["hangup_url"].endswith("type=hangup") and body["ring_url"].endswith("type=status")
    assert (body["ring_timeout"], body["time_limit"], body["send_digits"]) == (30, 330, "1w2")
    assert body["machine_detection"] == "true" and body["machine_detection_url"].endswith("type=machine")
    assert ("POST", f"/v1/Account/{AUTH_ID}/Call/") in emulator.requests
    await emulator.wait_ended(request_uuid)
    assert webhook.bad_signatures == 0
    await p.close()


async def test_ring_timeout_and_time_limit_are_clamped(emulator: PlivoEmulator, webhook: FakeWebhook) -> None:
    p = provider(emulator)
    req = PlaceRequest(call_id="c1", from_number="+15550000000", to_number="+15550001111",
                       urls=CallUrls(webhook.url, "c1"), ring_timeout_s=900, time_limit_s=99999)
    emulator.set_callee("+15550001111", Callee(ring="busy"))
    body = created(emulator, await p.place(req))
    assert (body["ring_timeout"], body["time_limit"]) == (120, 14400)
    await p.close()


async def test_transfer_moves_the_live_call(emulator: PlivoEmulator, webhook: FakeWebhook) -> None:
    webhook.replies["voice"] = '<Response><Wait length="60"/></Response>'
    webhook.replies["resume"] = '<Response><Speak>Moved here</Speak><Hangup/></Response>'
    p = provider(emulator)
    request_uuid = await p.place(place_request(webhook))
    await until(lambda: webhook.of("voice"), "the answer fetch")
    call_uuid = webhook.of("voice")[0]["CallUUID"]
    assert call_uuid != request_uuid       # the request id is not the call's id
    await p.push(CallRef("c1", call_uuid), Program("s", (Step("say", {"text": "x"}),)), CallUrls(webhook.url, "c1"))
    await emulator.wait_ended(call_uuid)
    assert emulator.calls[call_uuid].heard == ["Moved here"]
    assert webhook.of("resume")[0]["CallStatus"] == "in-progress"
    await p.close()


async def test_hangup_live_ringing_and_gone(emulator: PlivoEmulator, webhook: FakeWebhook) -> None:
    webhook.replies["voice"] = '<Response><Wait length="60"/></Response>'
    p = provider(emulator)
    await p.place(place_request(webhook))
    await until(lambda: webhook.of("voice"), "the answer fetch")
    call_uuid = webhook.of("voice")[0]["CallUUID"]
    assert await p.hangup(CallRef("c1", call_uuid)) is True
    await emulator.wait_ended(call_uuid)
    assert webhook.of("hangup")[-1]["CallStatus"] == "completed"
    assert await p.hangup(CallRef("c1", call_uuid)) is False           # already over: 404, 404
    assert await p.hangup(CallRef("c1", None)) is False

    emulator.set_callee("+15550002222", Callee(answer_after=50))
    ringing = await p.place(place_request(webhook, to="+15550002222"))
    # Only the request_uuid is known: DELETE /Call/ is 404, so the request is cancelled.
    assert await p.hangup(CallRef("c2", ringing)) is True
    await emulator.wait_ended(ringing)
    assert emulator.calls[ringing].status == "cancel"
    assert ("DELETE", f"/v1/Account/{AUTH_ID}/Request/{ringing}/") in emulator.requests
    await p.close()


async def test_errors_name_plivos_message_and_status(emulator: PlivoEmulator, webhook: FakeWebhook) -> None:
    p = provider(emulator)
    with pytest.raises(ProviderError, match=r"Plivo HTTP 400: invalid to number: 12 \(make call\)") as info:
        await p.place(place_request(webhook, to="+12"))
    assert info.value.status == 400 and not info.value.retryable
    wrong = PlivoProvider(make_settings(apiBaseUrl=emulator.base_url, authToken=TOKEN[::-1]), sleep=no_sleep)
    with pytest.raises(ProviderError, match="Plivo HTTP 401: authentication failed") as info:
        await wrong.place(place_request(webhook))
    assert info.value.status == 401
    bad_id = PlivoProvider(make_settings(apiBaseUrl=emulator.base_url, authId="nope"), sleep=no_sleep)
    with pytest.raises(ProviderError, match="Invalid auth_id"):
        await bad_id.place(place_request(webhook))
    for closing in (p, wrong, bad_id):
        await closing.close()


async def test_5xx_retried_on_hangup_never_on_create(emulator: PlivoEmulator, webhook: FakeWebhook) -> None:
    webhook.replies["voice"] = '<Response><Wait length="60"/></Response>'
    p = provider(emulator)
    emulator.fail_next(1, 500)
    before = len(emulator.requests)
    with pytest.raises(ProviderError, match="Plivo HTTP 500: internal server error") as info:
        await p.place(place_request(webhook))
    assert not info.value.retryable and len(emulator.requests) == before + 1     # sent once

    await p.place(place_request(webhook))
    await until(lambda: webhook.of("voice"), "the answer fetch")
    call_uuid = webhook.of("voice")[0]["CallUUID"]
    sleeps.clear()
    emulator.fail_next(2, 503, "service unavailable")
    assert await p.hangup(CallRef("c1", call_uuid)) is True
    assert sleeps == [0.25, 1.0]
    await emulator.wait_ended(call_uuid)
    emulator.fail_next(3, 502)
    with pytest.raises(ProviderError, match="HTTP 502"):
        await p.fetch_status(CallRef("c1", call_uuid))
    assert await p.fetch_status(CallRef("c1", call_uuid)) == "completed"
    await p.close()


async def test_unreachable_api_is_a_retryable_provider_error(webhook: FakeWebhook) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = PlivoProvider(make_settings(apiBaseUrl=f"http://127.0.0.1:{port}"), sleep=no_sleep)
    with pytest.raises(ProviderError, match="Plivo hang up call") as info:
        await p.hangup(CallRef("c1", "d0a87a1a-b0e9-4ab2-ac07-c22ee87cd04a"))
    assert info.value.retryable
    await p.close()
