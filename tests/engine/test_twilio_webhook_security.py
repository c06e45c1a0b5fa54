"""Twilio webhooks through the real server: every protection with its status
code, and the store checked for no change (issue 3, "Webhook security")."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator
from yarl import URL

from voicecall.engine.clock import ScaledClock
from voicecall.engine.config import default_settings
from voicecall.engine.runtime import VoiceCallRuntime
from voicecall.providers.callee import Callee
from voicecall.providers.twilio import TwilioEmulator

SID, TOKEN = "AC" + "0" * 32, "0123456789abcdef0123456789abcdef"


class TwilioRig:
    def __init__(self, runtime: VoiceCallRuntime, emulator: TwilioEmulator):
        self.runtime, self.emulator = runtime, emulator

    def signed(self, url: str, params: dict[str, str]) -> dict[str, str]:
        return {"X-Twilio-Signature": RequestValidator(TOKEN).compute_signature(url, params),
                "Content-Type": "application/x-www-form-urlencoded"}

    async def post(self, url: str, params: dict[str, str], headers: dict[str, str] | None = None,
                   data: bytes | None = None) -> int:
        # encoded=True: send the path exactly as written (no client-side ``..`` folding).
        async with aiohttp.ClientSession() as http, http.post(
                URL(url, encoded=True), data=data if data is not None else urlencode(params),
                headers=headers if headers is not None else self.signed(url, params)) as response:
            return response.status

    async def ringing_call(self) -> tuple[str, str]:
        self.emulator.set_callee("+15550001111", Callee.from_script([{"answer": {"after": 100000}}]))
        call_id = await self.runtime.initiate(to="+15550001111", message="hi", mode="notify")
        session = self.runtime.sessions[call_id]
        for _ in range(1000):
            if session.record.state == "ringing" and session.record.provider_call_id:
                stored = [e["type"] for e in await self.runtime.store.events(call_id)]
                if "call.ringing" in stored:          # committed, not just in memory
                    return call_id, session.record.provider_call_id
            await asyncio.sleep(0.005)
        raise AssertionError("never rang")

    def status_params(self, sid: str, status: str, seq: int) -> dict[str, str]:
        return {"CallSid": sid, "AccountSid": SID, "From": "+15005550006", "To": "+15550001111",
                "CallStatus": status, "Direction": "outbound-api", "ApiVersion": "2010-04-01",
                "SequenceNumber": str(seq)}


@pytest.fixture
async def twilio_rig_factory(tmp_path: Path) -> AsyncIterator:
    started: list[tuple[VoiceCallRuntime, TwilioEmulator]] = []

    async def make(**config) -> TwilioRig:
        clock = ScaledClock(0.01)
        emulator = TwilioEmulator(SID, TOKEN, clock=clock)
        base = await emulator.start()
        settings = default_settings().replace(
            provider="twilio", twilio={"accountSid": SID, "authToken": TOKEN, "apiBaseUrl": base},
            fromNumber="+15005550006", store=str(tmp_path / "store"), serve={"port": 0},
            ringTimeoutMs=600000, **config)
        runtime = VoiceCallRuntime(settings, clock=clock)
        await runtime.start()
        started.append((runtime, emulator))
        return TwilioRig(runtime, emulator)

    yield make
    for runtime, emulator in reversed(started):
        if runtime._store is not None:
            await runtime.stop()
        await emulator.stop()


async def test_every_refusal_has_its_status_and_changes_nothing(twilio_rig_factory) -> None:
    rig = await twilio_rig_factory()
    call_id, sid = await rig.ringing_call()
    url = f"{rig.runtime.public_url}?{urlencode({'callId': call_id, 'type': 'status'})}"
    good = rig.status_params(sid, "in-progress", 40)
    before = await rig.runtime.store.events(call_id)
    forged = {**rig.signed(url, good), "X-Twilio-Signature": "RSOYDt4T1cUTdK1PDd93/VVr8B8="}
    other_token = {**rig.signed(url, good),
                   "X-Twilio-Signature": RequestValidator("f" * 32).compute_signature(url, good)}
    spoofed_url = url.replace(urlsplit(url).netloc, "evil.example.com")
    spoofed = {**rig.signed(spoofed_url, good), "X-Forwarded-Host": "evil.example.com"}
    base = rig.runtime.public_url
    statuses = {
        "forged signature": await rig.post(url, good, forged),
        "signed with another token": await rig.post(url, good, other_token),
        "missing signature": await rig.post(url, good, {"Content-Type": "application/x-www-form-urlencoded"}),
        "signature over another body": await rig.post(url, {**good, "CallStatus": "completed"},
                                                      rig.signed(url, good)),
        "forwarded host from an untrusted peer": await rig.post(url, good, spoofed),
        "trailing slash": await rig.post(base + "/?" + url.split("?")[1], good),
        "dot segments": await rig.post(base + "/../webhook?" + url.split("?")[1], good),
        "case": await rig.post(base.replace("/voice/webhook", "/VOICE/webhook") + "?" + url.split("?")[1], good),
        "oversized body": await rig.post(url, good, rig.signed(url, good), data=b"CallSid=" + b"x" * 70000),
    }
    assert statuses == {
        "forged signature": 401, "signed with another token": 401, "missing signature": 401,
        "signature over another body": 401, "forwarded host from an untrusted peer": 401,
        "trailing slash": 404, "dot segments": 404, "case": 404, "oversized body": 413,
    }
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 405
    assert await rig.runtime.store.events(call_id) == before
    assert rig.runtime.sessions[call_id].record.state == "ringing"


async def test_slow_body_times_out_without_side_effects(twilio_rig_factory) -> None:
    rig = await twilio_rig_factory()
    call_id, sid = await rig.ringing_call()
    query = urlencode({"callId": call_id, "type": "status"})
    url = f"{rig.runtime.public_url}?{query}"
    params = rig.status_params(sid, "in-progress", 41)
    body = urlencode(params).encode()
    host, port = urlsplit(url).hostname, urlsplit(url).port
    reader, writer = await asyncio.open_connection(host, port)
    head = (f"POST {urlsplit(url).path}?{query} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"X-Twilio-Signature: {rig.signed(url, params)['X-Twilio-Signature']}\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n")
    writer.write(head.encode() + body[:10])
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    assert status_line.split()[1] == b"408"
    assert rig.runtime.sessions[call_id].record.state == "ringing"


async def test_replay_is_acknowledged_once_and_survives_a_restart(twilio_rig_factory) -> None:
    rig = await twilio_rig_factory()
    call_id, sid = await rig.ringing_call()
    url = f"{rig.runtime.public_url}?{urlencode({'callId': call_id, 'type': 'status'})}"
    params = rig.status_params(sid, "in-progress", 42)
    assert await rig.post(url, params) == 200
    events = await rig.runtime.store.events(call_id)
    assert await rig.post(url, params) == 200
    assert await rig.runtime.store.events(call_id) == events
    rig.runtime._webhook.replays = type(rig.runtime._webhook.replays)()   # forget the in-memory cache
    assert await rig.post(url, params) == 200
    assert await rig.runtime.store.events(call_id) == events            # the store still knows it


async def test_skip_signature_verification_accepts_and_warns_on_every_request(twilio_rig_factory, caplog) -> None:
    rig = await twilio_rig_factory(skipSignatureVerification=True)
    call_id, sid = await rig.ringing_call()
    url = f"{rig.runtime.public_url}?{urlencode({'callId': call_id, 'type': 'status'})}"
    caplog.set_level(logging.WARNING, logger="voicecall.webhook")
    assert await rig.post(url, rig.status_params(sid, "in-progress", 43),
                          {"Content-Type": "application/x-www-form-urlencoded"}) == 200
    assert rig.runtime.sessions[call_id].record.state == "answered"
    assert "signature verification is OFF" in caplog.text


MUTABLE = ["CallSid", "CallStatus", "From", "To", "SequenceNumber"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from([*MUTABLE, "url", "signature"]), junk=st.text(min_size=1, max_size=8))
def test_no_mutation_of_a_signed_request_verifies(field: str, junk: str) -> None:
    """The provider's check, property-tested: any change to URL, parameter or signature fails."""
    from voicecall.engine.errors import SignatureError
    from voicecall.providers.base import WebhookRequest
    from voicecall.providers.twilio import TwilioProvider

    provider = TwilioProvider(default_settings().replace(
        provider="twilio", twilio={"accountSid": SID, "authToken": TOKEN}, fromNumber="+15005550006"),
        store_dir=Path("/nonexistent"), clock=ScaledClock(1))
    url = "https://voice.example.com/voice/webhook?callId=abc&type=status"
    params = {"CallSid": "CA" + "1" * 32, "CallStatus": "ringing", "From": "+15005550006",
              "To": "+15550001111", "SequenceNumber": "1"}
    signature = RequestValidator(TOKEN).compute_signature(url, params)
    if field == "url":
        url = url + junk
    elif field == "signature":
        index = len(junk) % (len(signature) - 1)
        signature = signature[:index] + ("A" if signature[index] != "A" else "B") + signature[index + 1:]
    else:
        params = {**params, field: params[field] + junk}
    req = WebhookRequest(method="POST", url=url, path="/voice/webhook", query=(),
                         headers={"x-twilio-signature": signature}, body=urlencode(params).encode(),
                         form=tuple(params.items()))
    with pytest.raises(SignatureError):
        provider.verify(req)
