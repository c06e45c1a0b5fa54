"""Calls driven over JSON-RPC against a real runtime and the mock carrier:
initiate → status → end, continue (blocking and polled), speak, dtmf, and
every runtime error code -32001 … -32009 with its slug."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from conftest import Control, running

from voicecall.engine.errors import ProviderError
from voicecall.providers.callee import Callee

TO = "+15550001111"
ANSWERS = "a table for two"
QUIET: list[Any] = [{"wait": 500}, "silence"]


def conversation_callee(ctl: Control, to: str = TO) -> None:
    # The first gather hears a long silence (510 s, 5 s real); a continue
    # interrupts it, and its own gather gets the answer. So the answer always
    # belongs to the awaited turn, however slow the test machine.
    script = [{"answer": {"after": 1}}, *QUIET, {"say": ANSWERS}, *QUIET * 3]
    ctl.rt.mock_carrier.set_callee(to, Callee.from_script(script))


async def place(ctl: Control, to: str = TO, **params: Any) -> str:
    params = {"to": to, "message": "Hello from the test", "mode": "conversation", **params}
    result = await ctl.result("voicecall.initiate", params)
    assert set(result) == {"callId"}
    return str(result["callId"])


async def test_initiate_status_end(ctl: Control) -> None:
    conversation_callee(ctl)
    call_id = await place(ctl)
    record = await ctl.result("voicecall.status", {"callId": call_id})
    assert record["callId"] == call_id and record["to"] == TO and record["mode"] == "conversation"
    assert record["terminal"] is False
    listed = await ctl.result("voicecall.status", {})
    assert [c["callId"] for c in listed["calls"]] == [call_id]
    await ctl.gather_open(call_id)
    assert await ctl.result("voicecall.end", {"callId": call_id}) == {"ok": True}
    await ctl.rt.wait_ended(call_id, timeout=5)
    record = await ctl.result("voicecall.status", {"callId": call_id})
    assert (record["state"], record["terminal"], record["endReason"]) == ("hangup-bot", True, "hangup-bot")
    first = record["transcript"][0]
    assert (first["role"], first["text"]) == ("bot", "Hello from the test")
    assert first["at"].endswith("Z")
    assert await ctl.result("voicecall.status", {}) == {"calls": []}
    # Ending it again: the call exists but is over.
    error = await ctl.error("voicecall.end", {"callId": call_id})
    assert error == {"code": -32002, "message": f"call {call_id} already ended (hangup-bot)",
                     "data": {"reason": "call_ended", "endReason": "hangup-bot"}}


async def test_continue_returns_the_callers_answer(ctl: Control) -> None:
    conversation_callee(ctl)
    call_id = await place(ctl)
    await ctl.gather_open(call_id)
    result = await ctl.result("voicecall.continue", {"callId": call_id, "message": "How many people?"})
    assert result == {"transcript": ANSWERS}
    record = await ctl.result("voicecall.status", {"callId": call_id})
    said = [(t["role"], t["text"]) for t in record["transcript"]]
    assert ("bot", "How many people?") in said and said[-1] == ("caller", ANSWERS)
    assert record["turnCount"] == 1
    # The turn's latency reaches /metrics once the next instruction went out.
    live = ctl.rt.sessions[call_id].record
    await ctl.until(lambda: "lastTurnLatencyMs" in live.metrics)
    async with ctl.http.get(ctl.base + "/metrics", headers={"Authorization": f"Bearer {ctl.token}"}) as resp:
        assert "voicecall_turn_latency_seconds_count 1.0" in await resp.text()
    await ctl.result("voicecall.end", {"callId": call_id})


async def test_continue_start_then_poll_result(ctl: Control) -> None:
    conversation_callee(ctl)
    call_id = await place(ctl)
    await ctl.gather_open(call_id)
    started = await ctl.result("voicecall.continue.start", {"callId": call_id, "message": "How many people?"})
    op = started["operationId"]
    # While the turn is open a second continue is refused.
    error = await ctl.error("voicecall.continue", {"callId": call_id, "message": "again?"})
    assert error == {"code": -32007, "message": f"call {call_id} already has a turn waiting for the caller",
                     "data": {"reason": "turn_in_progress"}}
    seen = []
    while True:
        result = await ctl.result("voicecall.continue.result", {"operationId": op})
        seen.append(result["status"])
        if result["status"] == "done":
            break
        assert result == {"status": "pending"}
        await asyncio.sleep(0.01)
    assert result == {"status": "done", "transcript": ANSWERS}
    # Polling again gives the same answer: results are kept for a while.
    assert await ctl.result("voicecall.continue.result", {"operationId": op}) == result
    await ctl.result("voicecall.end", {"callId": call_id})


async def test_continue_start_on_an_unknown_call_fails_at_once(ctl: Control) -> None:
    error = await ctl.error("voicecall.continue.start", {"callId": "nope", "message": "hi"})
    assert error == {"code": -32001, "message": "no active call nope",
                     "data": {"reason": "call_not_found", "callId": "nope"}}


async def test_speak_and_dtmf_reach_the_carrier(ctl: Control) -> None:
    conversation_callee(ctl)
    call_id = await place(ctl)
    await ctl.gather_open(call_id)
    carrier_call = ctl.carrier_call(call_id)
    assert await ctl.result("voicecall.speak", {"callId": call_id, "message": "One moment please"}) == {"ok": True}
    await ctl.until(lambda: "One moment please" in carrier_call.callee.heard)
    assert await ctl.result("voicecall.dtmf", {"callId": call_id, "digits": "12#"}) == {"ok": True}
    await ctl.until(lambda: any(e.kind == "dtmf" and e.detail == "12#" for e in carrier_call.log))
    await ctl.result("voicecall.end", {"callId": call_id})


@pytest.mark.parametrize("method", ["voicecall.speak", "voicecall.continue", "voicecall.end", "voicecall.status"])
async def test_unknown_call(ctl: Control, method: str) -> None:
    params = {"callId": "nope"} if method in ("voicecall.end", "voicecall.status") else \
        {"callId": "nope", "message": "hi"}
    error = await ctl.error(method, params)
    assert error["code"] == -32001
    assert error["message"] in ("no active call nope", "no call nope")
    assert error["data"] == {"reason": "call_not_found", "callId": "nope"}


async def test_not_connected_yet(ctl: Control) -> None:
    ctl.rt.mock_carrier.set_callee(TO, Callee.from_script(["no-answer"]))
    call_id = await place(ctl)
    await ctl.until(lambda: ctl.rt.sessions[call_id].record.state == "ringing")
    for method, params in (("voicecall.speak", {"message": "hi"}), ("voicecall.dtmf", {"digits": "1"})):
        error = await ctl.error(method, {"callId": call_id, **params})
        assert error == {"code": -32003, "message": f"call {call_id} is not connected yet (ringing)",
                         "data": {"reason": "call_not_connected", "state": "ringing"}}
    await ctl.result("voicecall.end", {"callId": call_id})


async def test_not_accepted_in_the_calls_state(ctl: Control) -> None:
    # A notify call takes no control verbs while it plays its message.
    ctl.rt.mock_carrier.set_callee(TO, Callee.from_script([{"answer": {"after": 1}}]))
    call_id = await place(ctl, mode="notify", message=" ".join(["word"] * 300))
    await ctl.until(lambda: ctl.rt.sessions[call_id].record.state not in ("initiated", "ringing"))
    error = await ctl.error("voicecall.speak", {"callId": call_id, "message": "hi"})
    state = error["data"]["state"]   # the notify flow moves on by itself; whichever state it was in
    assert state in {s for s in ctl.rt.sessions[call_id].flow.states if s not in ("initiated", "ringing")}
    assert error == {"code": -32006, "message": f"speak is not accepted while the call is {state}",
                     "data": {"reason": "not_accepted_in_state", "state": state}}
    await ctl.result("voicecall.end", {"callId": call_id})


async def test_concurrency_limit_and_a_failed_placement_releases_its_slot(
        ctl: Control, monkeypatch: pytest.MonkeyPatch) -> None:
    for n in range(4):
        ctl.rt.mock_carrier.set_callee(f"+1555000200{n}", Callee.from_script(["no-answer"]))
    first = await place(ctl, "+15550002000")
    # The carrier refuses one placement (fault injected at the provider's REST call).
    real_place = ctl.rt.provider.place

    async def refusing(request: Any) -> str:
        if request.to_number == "+15550009999":
            raise ProviderError("To number is not reachable", provider="mock", status=400)
        return await real_place(request)

    monkeypatch.setattr(ctl.rt.provider, "place", refusing)
    error = await ctl.error("voicecall.initiate", {"to": "+15550009999", "message": "hi", "mode": "conversation"})
    assert error == {"code": -32005, "message": "the carrier refused the call: To number is not reachable",
                     "data": {"reason": "carrier_error", "provider": "mock"}}
    assert list(ctl.rt.sessions) == [first]
    # The refused call's slot is free again: a second call fits, a third does not.
    results = await asyncio.gather(*(ctl.rpc("voicecall.initiate", {"to": f"+1555000200{n}", "message": "hi",
                                                                     "mode": "conversation"}) for n in (1, 2, 3)))
    placed = [r["result"]["callId"] for r in results if "result" in r]
    refused = [r["error"] for r in results if "error" in r]
    assert len(placed) == 1 and len(refused) == 2
    assert refused[0] == {"code": -32004, "message": "maximum concurrent calls (2) reached",
                          "data": {"reason": "concurrency_limit", "limit": 2}}
    assert sorted(ctl.rt.sessions) == sorted([first, *placed])
    for call_id in (first, *placed):
        await ctl.result("voicecall.end", {"callId": call_id})


async def test_turn_timeout_and_destination_not_allowed(tmp_path: Path) -> None:
    async with running(tmp_path, transcriptTimeoutMs=1000, outbound={"allowTo": ["+1555"]}) as ctl:
        error = await ctl.error("voicecall.initiate", {"to": "+442071234567", "message": "hi"})
        assert error == {"code": -32009, "message": "+442071234567 is not allowed by outbound.allowTo",
                         "data": {"reason": "destination_not_allowed", "to": "+442071234567"}}
        # The caller stays silent: a gather lasts 510 s, the turn only 1 s.
        ctl.rt.mock_carrier.set_callee(TO, Callee.from_script([{"answer": {"after": 1}}, *QUIET * 3]))
        call_id = await place(ctl)
        await ctl.gather_open(call_id)
        error = await ctl.error("voicecall.continue", {"callId": call_id, "message": "Anyone there?"})
        assert error == {"code": -32008, "message": "no answer from the caller within 1 s",
                         "data": {"reason": "turn_timeout"}}
        await ctl.result("voicecall.end", {"callId": call_id})
