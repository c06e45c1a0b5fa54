"""Carrier REST failures through the runtime (issue 3, item 5): a refusal is
a clear error naming the carrier's code and message, the call is recorded as
failed, its slot is released, and nothing is left live that no carrier knows."""

from __future__ import annotations

import asyncio

import pytest

from voicecall.engine.errors import CarrierFailed
from voicecall.engine.testing import Harness
from voicecall.providers.callee import Callee


@pytest.mark.parametrize("provider", ["twilio", "plivo"])
async def test_a_refused_placement_is_a_failed_call_and_frees_its_slot(provider: str) -> None:
    async with Harness(provider, config={"maxConcurrentCalls": 1}, scale=0.01) as harness:
        runtime = harness.runtime
        harness.carrier.fail_next(1, 400, "Account suspended")
        with pytest.raises(CarrierFailed) as caught:
            await runtime.initiate(to="+15550001111", message="hi", mode="notify")
        assert "Account suspended" in str(caught.value)
        assert runtime.sessions == {}
        [record] = await runtime.store.recent_calls()
        assert (record.state, record.end_reason, record.terminal) == ("failed", "failed", True)
        # The slot is free again: the next placement goes through and ends normally.
        harness.carrier.set_callee("+15550001111", Callee.from_script([{"answer": {"after": 1}}]))
        call_id = await runtime.initiate(to="+15550001111", message="hi", mode="notify")
        assert (await runtime.wait_ended(call_id, 10)).state == "hangup-bot"


async def test_twilio_error_code_and_message_reach_the_caller() -> None:
    async with Harness("twilio", scale=0.01) as harness:
        harness.carrier.fail_next(1, 400, "The 'To' number is not a valid phone number.")
        with pytest.raises(CarrierFailed, match=r"Twilio error 20001: The 'To' number is not a valid phone number"):
            await harness.runtime.initiate(to="+15550001111", message="hi", mode="notify")


async def test_server_errors_on_hang_up_are_retried() -> None:
    async with Harness("twilio", scale=0.01) as harness:
        runtime = harness.runtime
        harness.carrier.set_callee("+15550001111", Callee.from_script([{"answer": {"after": 1}}, {"wait": 10000}]))
        call_id = await runtime.initiate(to="+15550001111", message="hi", mode="conversation")
        session = runtime.sessions[call_id]
        while session.record.state != "listening":
            await asyncio.sleep(0.005)
        harness.carrier.fail_next(2, 503, "Service Unavailable")
        await runtime.end(call_id)
        record = await runtime.wait_ended(call_id, 10)
        assert (record.state, record.end_reason) == ("hangup-bot", "hangup-bot")
        call_path = f"/2010-04-01/Accounts/{harness.carrier.account_sid}/Calls/{record.provider_call_id}.json"
        updates = [r for r in harness.carrier.requests if r == ("POST", call_path)]
        assert len(updates) == 3                      # two 503s, then the hang-up that worked
        # The end came from the carrier (our hang-up worked), not from giving up on it.
        assert "call.ended" in [e["type"] for e in await runtime.store.events(call_id)]
