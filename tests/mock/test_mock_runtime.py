"""The mock carrier against the real runtime: webhooks go through the engine's
own server and security checks (signatures included) and documents come from
the built-in flows, so the engine cannot tell this carrier from a real one."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from voicecall.engine.clock import RealClock
from voicecall.engine.config import default_settings
from voicecall.engine.runtime import VoiceCallRuntime
from voicecall.engine.security import load_or_create_mock_secret
from voicecall.providers.callee import Callee
from voicecall.providers.mock import MockCarrier

TO, CALLER, OUR_NUMBER = "+15550002222", "+15550009999", "+15550001111"
Rigged = tuple[VoiceCallRuntime, MockCarrier]


@pytest.fixture
def make(tmp_path: Path) -> Callable[..., Any]:
    @contextlib.asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[Rigged]:
        clock = RealClock()
        carrier = MockCarrier(secret=load_or_create_mock_secret(tmp_path), clock=clock, time_scale=0.01)
        base = await carrier.start()
        settings = default_settings(store=str(tmp_path), serve={"port": 0}, **overrides)
        runtime = VoiceCallRuntime(settings, clock=clock, provider_options={"api_base_url": base})
        try:
            await runtime.start()
            yield runtime, carrier
        finally:
            await runtime.stop()
            await carrier.stop()
    return factory


def statuses(call: Any) -> list[Any]:
    return [e.detail.get("status") for e in call.log if e.kind == "request"]


async def test_notify_call(make: Callable[..., Any]) -> None:
    async with make() as (runtime, carrier):
        carrier.set_callee(TO, Callee.from_script([{"answer": {"after": 2}}]))
        call_id = await runtime.initiate(to=TO, message="Your table is ready", mode="notify")
        (sid,) = carrier.calls
        call = await carrier.wait_ended(sid)
        assert call.heard == ["Your table is ready"] and call.end_reason == "completed"
        assert set(statuses(call)) == {200}                 # the runtime accepted every signed request
        record = await runtime.status(call_id=call_id)
        assert record["providerCallId"] == sid and record["terminal"] is True


async def test_conversation_turn_silence_and_caller_hangup(make: Callable[..., Any]) -> None:
    async with make() as (runtime, carrier):
        carrier.set_callee(TO, Callee.from_script([{"answer": {"after": 1}}, {"say": "I'd like a table"},
                                                   {"silence": {}}, {"hangup": {}}]))
        call_id = await runtime.initiate(to=TO, message="Hello from the restaurant", mode="conversation")
        (sid,) = carrier.calls
        call = await carrier.wait_ended(sid)
        assert call.heard[0] == "Hello from the restaurant" and len(call.heard) == 2
        assert call.end_reason == "hangup-user" and set(statuses(call)) == {200}
        kinds = [f"{e.detail['type']}/{e.detail['event']}" for e in call.log if e.kind == "request"]
        assert "gather/speech" in kinds and "noinput/redirect" in kinds
        record = await runtime.status(call_id=call_id)
        assert (record["state"], record["turnCount"]) == ("hangup-user", 1)
        assert [t["role"] for t in record["transcript"]] == ["bot", "caller", "bot"]
        assert record["transcript"][1]["text"] == "I'd like a table"


async def test_inbound_call_refused_by_default_policy(make: Callable[..., Any]) -> None:
    async with make() as (runtime, carrier):
        sid = await carrier.dial_in(CALLER, OUR_NUMBER, runtime.public_url, Callee.from_script([{"say": "hi"}]))
        call = await carrier.wait_ended(sid)
        assert call.answered_at is None and call.heard == [] and call.end_reason == "rejected"


async def test_inbound_call_answered_with_open_policy(make: Callable[..., Any]) -> None:
    async with make(inboundPolicy="open") as (runtime, carrier):
        sid = await carrier.dial_in(CALLER, OUR_NUMBER, runtime.public_url,
                                    Callee.from_script([{"say": "what are your opening hours"}, {"hangup": {}}]))
        call = await carrier.wait_ended(sid)
        assert call.answered_at is not None and call.heard, call.log
        assert call.end_reason == "hangup-user" and set(statuses(call)) == {200}
        said = [e.detail for e in call.log if e.kind == "said"]
        assert said == ["what are your opening hours"]
