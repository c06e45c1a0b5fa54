"""The real runtime against the Plivo emulator: placed notify and conversation
calls, an inbound call, and our own hang-up — every webhook signed, verified
and parsed by PlivoProvider, every live update a transfer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from plivo_support import AUTH_ID, TOKEN

from voicecall.engine.clock import ScaledClock
from voicecall.engine.config import default_settings
from voicecall.engine.runtime import VoiceCallRuntime
from voicecall.providers.callee import Callee
from voicecall.providers.plivo.emulator import PlivoEmulator

CALLEE = "+15550001111"


@contextlib.asynccontextmanager
async def running(store: Path, **config: Any) -> AsyncIterator[tuple[VoiceCallRuntime, PlivoEmulator]]:
    clock = ScaledClock(0.01)
    emulator = PlivoEmulator(AUTH_ID, TOKEN, clock=clock)
    base_url = await emulator.start()
    settings = default_settings().replace(
        provider="plivo", plivo={"authId": AUTH_ID, "authToken": TOKEN, "apiBaseUrl": base_url},
        fromNumber="+15550000000", store=str(store), serve={"port": 0}, maxConcurrentCalls=2, **config)
    runtime = VoiceCallRuntime(settings, clock=clock)
    try:
        await runtime.start()
        yield runtime, emulator
    finally:
        await runtime.stop()
        await emulator.stop()


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[tuple[VoiceCallRuntime, PlivoEmulator]]:
    async with running(tmp_path, inboundPolicy="open", inboundGreeting="Welcome to the test line.") as pair:
        yield pair


async def finish(runtime: VoiceCallRuntime, emulator: PlivoEmulator, call_id: str) -> tuple[Any, Any]:
    record = (await runtime.wait_ended(call_id, timeout=15)).to_public()
    call = emulator.calls[record["providerCallId"]]
    await emulator.wait_ended(call.call_uuid, timeout=5)
    return record, call


def bad_signatures(emulator: PlivoEmulator, uuid: str) -> list[Any]:
    return [e.detail for e in emulator.log(uuid) if e.kind == "request" and e.detail.get("status") != 200]


async def test_notify_call(live: tuple[VoiceCallRuntime, PlivoEmulator]) -> None:
    runtime, emulator = live
    emulator.set_callee(CALLEE, Callee.from_script([{"answer": {"after": 1}}]))
    call_id = await runtime.initiate(to=CALLEE, message="Your table is ready.", mode="notify")
    record, call = await finish(runtime, emulator, call_id)
    # The document's own <Hangup/> is our hang-up, as on the mock carrier.
    assert (record["state"], record["endReason"], record["provider"]) == ("hangup-bot", "hangup-bot", "plivo")
    # providerCallId moved from the request_uuid to the CallUUID once Plivo called back.
    assert record["providerCallId"] == call.call_uuid != call.request_uuid
    assert call.heard == ["Your table is ready."]
    assert [t["text"] for t in record["transcript"]] == ["Your table is ready."]
    (doc,) = [e.detail for e in emulator.log(call.call_uuid) if e.kind == "document"]
    # Nothing went inline: the opening was served on the answer_url fetch, and ends the call itself.
    assert doc["source"] == "voice" and doc["commands"].endswith("<Hangup/></Response>")
    assert bad_signatures(emulator, call.call_uuid) == []


async def test_conversation_call_turns_go_through_transfers(live: tuple[VoiceCallRuntime, PlivoEmulator]) -> None:
    runtime, emulator = live
    emulator.set_callee(CALLEE, Callee.from_script([
        {"answer": {"after": 1}}, {"say": "a table for two"}, {"hangup": {}}]))
    call_id = await runtime.initiate(to=CALLEE, message="Hi, this is the restaurant.", mode="conversation")
    record, call = await finish(runtime, emulator, call_id)
    assert record["state"] in ("completed", "hangup-user") and record["turnCount"] == 1
    assert call.heard[0] == "Hi, this is the restaurant."
    assert any('You said: "a table for two"' in text for text in call.heard)
    assert [(t["role"], t["text"]) for t in record["transcript"]][:2] == [
        ("bot", "Hi, this is the restaurant."), ("caller", "a table for two")]
    sources = [e.detail["source"] for e in emulator.log(call.call_uuid) if e.kind == "document"]
    assert sources[0] == "voice" and "transfer" in sources      # the reply was pushed by a transfer
    assert bad_signatures(emulator, call.call_uuid) == []


async def test_we_hang_up_a_live_call(live: tuple[VoiceCallRuntime, PlivoEmulator]) -> None:
    runtime, emulator = live
    emulator.set_callee(CALLEE, Callee.from_script([{"answer": {"after": 1}}, {"wait": 30}, {"say": "late"}]))
    call_id = await runtime.initiate(to=CALLEE, message="Hello.", mode="conversation")
    for _ in range(1500):
        session = runtime.sessions.get(call_id)
        if session is not None and session.record.state == "listening":
            break
        await asyncio.sleep(0.01)
    await runtime.end(call_id)
    record, call = await finish(runtime, emulator, call_id)
    assert record["endReason"] == "hangup-bot"
    assert ("DELETE", f"/v1/Account/{AUTH_ID}/Call/{call.call_uuid}/") in emulator.requests


async def test_inbound_call(live: tuple[VoiceCallRuntime, PlivoEmulator]) -> None:
    runtime, emulator = live
    uuid = await emulator.dial_in("+14155550100", "+15550000000", runtime.public_url,
                                  Callee.from_script([{"hangup": {}}]))
    await emulator.wait_ended(uuid, timeout=10)
    record = None
    for _ in range(500):       # the runtime records the caller's hang-up just after the carrier ends
        record = await runtime.store.find_provider_call("plivo", uuid)
        if record is not None and record.terminal:
            break
        await asyncio.sleep(0.01)
    assert record is not None
    public = record.to_public()
    assert (public["direction"], public["from"], public["to"]) == ("inbound", "+14155550100", "+15550000000")
    assert public["terminal"] and emulator.calls[uuid].heard[0] == "Welcome to the test line."
    assert bad_signatures(emulator, uuid) == []


async def until_state(runtime: VoiceCallRuntime, call_id: str, state: str) -> None:
    for _ in range(1500):
        session = runtime.sessions.get(call_id)
        if session is not None and session.record.state == state:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"call {call_id} never reached {state}")


async def test_speak_and_dtmf_on_a_live_call_are_transfers(live: tuple[VoiceCallRuntime, PlivoEmulator]) -> None:
    runtime, emulator = live
    emulator.set_callee(CALLEE, Callee.from_script([{"answer": {"after": 1}}, {"wait": 60}, {"say": "never"}]))
    call_id = await runtime.initiate(to=CALLEE, message="Hello.", mode="conversation")
    await until_state(runtime, call_id, "listening")
    uuid = runtime.sessions[call_id].record.provider_call_id or ""
    await runtime.speak(call_id, "One moment please.")
    for _ in range(1000):
        if "One moment please." in emulator.calls[uuid].heard:
            break
        await asyncio.sleep(0.01)
    await runtime.dtmf(call_id, "12")
    for _ in range(1000):
        if any(e.kind == "dtmf" for e in emulator.log(uuid)):
            break
        await asyncio.sleep(0.01)
    await runtime.end(call_id)
    record, call = await finish(runtime, emulator, call_id)
    assert call.heard[:2] == ["Hello.", "One moment please."]
    assert [e.detail for e in emulator.log(uuid) if e.kind == "dtmf"] == ["12"]
    transfers = [e.detail["transfer"] for e in emulator.log(uuid) if e.kind == "rest" and "transfer" in e.detail]
    assert len(transfers) >= 2 and all(url.endswith("type=resume") for url in transfers)
    # After speaking and sending digits the call listened again, until we hung up.
    docs = [e.detail["commands"] for e in emulator.log(uuid) if e.kind == "document"]
    assert any("<DTMF>12</DTMF><GetInput " in doc for doc in docs)
    assert any("One moment please.</Speak><GetInput " in doc for doc in docs)
    assert record["endReason"] == "hangup-bot" and bad_signatures(emulator, uuid) == []


async def test_refused_inbound_call_is_hung_up_unanswered(tmp_path: Path) -> None:
    async with running(tmp_path, inboundPolicy="disabled") as (runtime, emulator):
        uuid = await emulator.dial_in("+14155550100", "+15550000000", runtime.public_url, Callee())
        await emulator.wait_ended(uuid, timeout=10)
        call = emulator.calls[uuid]
        (doc,) = [e.detail["commands"] for e in emulator.log(uuid) if e.kind == "document"]
        assert doc.endswith('<Response><Hangup reason="rejected"/></Response>')
        assert call.heard == [] and call.answered_at is None and call.hangup_cause == "CALL_REJECTED"
