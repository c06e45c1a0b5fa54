"""How a flow drives a call: ordering, timers, the supervisor, restarts,
render errors and control verbs, on the real runtime and mock carrier."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from voicecall.engine.errors import (
    CallNotConnected,
    CallNotFound,
    ConcurrencyLimit,
    DestinationNotAllowed,
    InvalidParams,
    NotAcceptedInState,
    TurnInProgress,
)
from voicecall.providers.callee import Callee


async def _wait(predicate, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.005)


async def _ringing(rig, to: str = "+15550001111", **kwargs) -> tuple[str, str]:
    rig.carrier.set_callee(to, Callee.from_script([{"answer": {"after": 100000}}]))
    call_id = await rig.runtime.initiate(to=to, **kwargs)
    session = rig.runtime.sessions[call_id]
    await _wait(lambda: session.record.state == "ringing" and session.record.provider_call_id)
    return call_id, session.record.provider_call_id


async def test_late_ringing_after_answered_and_duplicates_are_dropped(rig) -> None:
    call_id, sid = await _ringing(rig, message="hi", mode="notify")
    assert (await rig.post({"sid": sid, "event": "answered", "seq": 10}, callId=call_id, type="status"))[0] == 200
    assert (await rig.post({"sid": sid, "event": "ringing", "seq": 11}, callId=call_id, type="status"))[0] == 200
    assert (await rig.post({"sid": sid, "event": "answered", "seq": 12}, callId=call_id, type="status"))[0] == 200
    record = rig.runtime.sessions[call_id].record
    assert record.state == "answered"
    outcomes = [(e["type"], e["data"]["outcome"]) for e in await rig.events(call_id) if "outcome" in e["data"]][-3:]
    assert outcomes == [
        ("call.answered", "ringing -> answered"),
        ("call.ringing", "dropped: lifecycle already past this point"),
        ("call.answered", "dropped: lifecycle already past this point"),
    ]


async def test_out_of_order_end_before_answer_is_final(rig) -> None:
    call_id, sid = await _ringing(rig, message="hi", mode="notify")
    await rig.post({"sid": sid, "event": "ended", "reason": "busy", "seq": 20}, callId=call_id, type="status")
    await rig.post({"sid": sid, "event": "answered", "seq": 19}, callId=call_id, type="status")
    record = await rig.runtime.wait_ended(call_id, 5)
    assert (record.state, record.end_reason) == ("busy", "busy")


async def test_stale_turn_token_cannot_complete_a_newer_turn(rig) -> None:
    rig.carrier.set_callee("+15550001111", Callee.from_script([{"answer": {"after": 1}}, {"wait": 100000}]))
    call_id = await rig.runtime.initiate(to="+15550001111", message="hi", mode="conversation")
    session = rig.runtime.sessions[call_id]
    await _wait(lambda: session.record.state == "listening")
    sid, live_token = session.record.provider_call_id, session.record.turn
    status, _ = await rig.post({"sid": sid, "event": "speech", "text": "forged turn", "seq": 90},
                               callId=call_id, type="gather", token="not-the-token")
    assert status == 200
    assert session.record.state == "listening" and session.record.turn == live_token
    assert session.record.turn_count == 0
    await rig.post({"sid": sid, "event": "speech", "text": "real turn", "seq": 91},
                   callId=call_id, type="gather", token=live_token)
    assert session.record.turn_count == 1 and session.record.turn != live_token


async def test_control_verb_errors(rig) -> None:
    runtime = rig.runtime
    with pytest.raises(InvalidParams, match=r"E\.164"):
        await runtime.initiate(to="555-1234", message="hi")
    with pytest.raises(InvalidParams, match="needs a message"):
        await runtime.initiate(to="+15550001111", mode="notify")
    with pytest.raises(InvalidParams, match="dtmfSequence works with conversation"):
        await runtime.initiate(to="+15550001111", message="x", mode="notify", dtmf_sequence="1w2")
    with pytest.raises(InvalidParams, match="unknown flow"):
        await runtime.initiate(to="+15550001111", message="x", flow="nope")
    with pytest.raises(CallNotFound):
        await runtime.speak("missing", "hello")
    call_id, _ = await _ringing(rig, message="hi", mode="conversation")
    with pytest.raises(CallNotConnected):
        await runtime.speak(call_id, "hello")


async def test_concurrency_limit_and_allow_to(rig_factory) -> None:
    rig = await rig_factory(maxConcurrentCalls=1, outbound={"allowTo": ["+1555"]})
    with pytest.raises(DestinationNotAllowed):
        await rig.runtime.initiate(to="+447700900123", message="hi")
    await _ringing(rig, message="hi", mode="notify")
    with pytest.raises(ConcurrencyLimit):
        await rig.runtime.initiate(to="+15550001112", message="hi")


async def test_rpc_not_accepted_and_turn_in_progress(rig) -> None:
    rig.carrier.set_callee("+15550001111", Callee.from_script([{"answer": {"after": 1}}, {"wait": 100000}]))
    call_id = await rig.runtime.initiate(to="+15550001111", message="hi", mode="conversation")
    session = rig.runtime.sessions[call_id]
    await _wait(lambda: session.record.state == "listening")
    turn = asyncio.ensure_future(rig.runtime.continue_(call_id, "Which day?"))
    await _wait(lambda: session.waiter is not None)
    with pytest.raises(TurnInProgress):
        await rig.runtime.continue_(call_id, "again?")
    sid, token = session.record.provider_call_id, session.record.turn
    await _wait(lambda: session.record.turn == token and not session.lock.locked())
    await rig.post({"sid": sid, "event": "speech", "text": "Tuesday", "seq": 99}, callId=call_id,
                   type="gather", token=session.record.turn)
    assert await asyncio.wait_for(turn, 5) == "Tuesday"
    assert session.record.state == "listening"      # no auto reply for an awaited turn
    # The notify flow does not take rpc.speak once it has hung up its document.
    rig.carrier.set_callee("+15550002222", Callee.from_script([{"answer": {"after": 1}}]))
    notify = await rig.runtime.initiate(to="+15550002222", message="bye", mode="notify")
    await _wait(lambda: notify in rig.runtime.sessions and rig.runtime.sessions[notify].record.answered_at)
    with pytest.raises(NotAcceptedInState, match="speak is not accepted while the call is answered"):
        await rig.runtime.speak(notify, "more")


STALE_FLOW = """
flow: slow_pickup
mode: notify
description: Rings for a long time.
initial: initiated
states:
  initiated: {}
  answered:
    do: [{say: "hi"}, {hangup: {}}]
  timeout: {final: true}
  completed: {final: true}
transitions:
  - {on: call.answered, from: initiated, to: answered}
  - {on: call.ended, from: "*", to: timeout, when: "event.reason == 'timeout'"}
  - {on: call.ended, from: "*", to: completed}
"""


async def test_reaper_ends_unanswered_calls_but_never_answered_ones(rig_factory, tmp_path: Path) -> None:
    rig = await rig_factory(staleCallReaperSeconds=20)
    rig.carrier.set_callee("+15550001111", Callee.from_script([{"answer": {"after": 100000}}]))
    stale = await rig.runtime.initiate(to="+15550001111", message="hi", mode="notify")
    rig.carrier.set_callee("+15550002222", Callee.from_script([{"answer": {"after": 1}}, {"wait": 100000}]))
    live = await rig.runtime.initiate(to="+15550002222", message="hi", mode="conversation")
    record = await rig.runtime.wait_ended(stale, 5)
    assert (record.state, record.end_reason) == ("timeout", "timeout")
    await asyncio.sleep(40 * 0.01)                    # twice the reaper window, in call time
    assert rig.runtime.sessions[live].record.state == "listening"


async def test_max_duration_ends_an_answered_call(rig_factory) -> None:
    rig = await rig_factory(maxDurationSeconds=15)
    rig.carrier.set_callee("+15550001111", Callee.from_script([{"answer": {"after": 1}}, {"wait": 100000}]))
    call_id = await rig.runtime.initiate(to="+15550001111", message="hi", mode="conversation")
    record = await rig.runtime.wait_ended(call_id, 5)
    assert (record.state, record.end_reason) == ("timeout", "timeout")
    assert "timer.max_duration" in [e["type"] for e in await rig.events(call_id)]


BROKEN_AT_RUNTIME = """
flow: fragile
mode: conversation
description: Speaks something that only exists for speech events.
initial: initiated
states:
  initiated: {}
  answered:
    opening: true
    do: [{say: "hello"}, {goto: listening}]
  listening:
    do: [{gather: {input: dtmf, timeout: 5}}]
  echo:
    do: [{say: "{{ event.text | upper }}"}, {goto: listening}]
  completed: {final: true}
transitions:
  - {on: call.answered, from: initiated, to: answered}
  - {on: dtmf, from: listening, to: echo}
  - {on: gather.timeout, from: listening, to: listening}
  - {on: call.ended, from: "*", to: completed}
"""


async def test_render_error_mid_call_apologises_hangs_up_and_ends_in_error(rig_factory, tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "fragile.yaml").write_text(BROKEN_AT_RUNTIME)
    rig = await rig_factory(flows={"paths": [str(flows)]})
    rig.carrier.set_callee("+15550001111", Callee.from_script([{"answer": {"after": 1}}, {"digits": "5"}]))
    call_id = await rig.runtime.initiate(to="+15550001111", flow="fragile")
    record = await rig.runtime.wait_ended(call_id, 5)
    assert (record.state, record.end_reason) == ("error", "error")
    sid = record.provider_call_id
    carrier_call = await rig.carrier.wait_ended(sid, 5)
    assert carrier_call.heard[-1] == "Sorry, something went wrong on our side. Goodbye."
    statuses = [e.detail.get("status") for e in rig.carrier.log(sid) if e.kind == "request"]
    assert 500 not in statuses


HOLD_FLOW = """
flow: hold
mode: conversation
description: Keeps the caller on hold (the carrier sits in a long pause).
initial: initiated
states:
  initiated: {}
  holding:
    do: [{say: "Please hold."}, {pause: 1000}, {hangup: {}}]
  timeout: {final: true}
  completed: {final: true}
transitions:
  - {on: call.answered, from: initiated, to: holding}
  - {on: call.ended, from: "*", to: timeout, when: "event.reason == 'timeout'"}
  - {on: call.ended, from: "*", to: completed}
"""


async def test_restart_restores_live_calls_and_overdue_timers_fire(rig_factory, tmp_path: Path) -> None:
    from voicecall.engine.clock import ScaledClock
    from voicecall.engine.security import load_or_create_mock_secret
    from voicecall.providers.mock import MockCarrier

    store = tmp_path / "store"
    carrier = MockCarrier(secret=load_or_create_mock_secret(store), clock=ScaledClock(0.01))
    await carrier.start()
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "hold.yaml").write_text(HOLD_FLOW)
    config = {"maxDurationSeconds": 100, "flows": {"paths": [str(flows)]}}
    rig = await rig_factory(store=store, carrier=carrier, **config)
    rig.carrier.set_callee("+15550001111", Callee.from_script([{"answer": {"after": 1}}]))
    call_id = await rig.runtime.initiate(to="+15550001111", flow="hold")
    session = rig.runtime.sessions[call_id]
    await _wait(lambda: session.record.state == "holding")
    timers = [t.name for t in session.record.timers]
    assert "sup:max_duration" in timers
    await rig.runtime.stop()

    again = await rig_factory(store=store, carrier=carrier, **config)
    restored = again.runtime.sessions[call_id]
    assert restored.record.state == "holding"
    assert "sup:max_duration" in restored.timers
    record = await again.runtime.wait_ended(call_id, 10)   # the restored cap still ends it
    assert (record.state, record.end_reason) == ("timeout", "timeout")
    await carrier.stop()


async def test_refused_inbound_call_is_audited_once_however_often_the_carrier_retries(rig_factory) -> None:
    rig = await rig_factory(inboundPolicy="allowlist", allowFrom=["+15550002222"])
    body = {"sid": "MCrefused", "event": "inbound", "direction": "inbound", "from": "+15550009999",
            "to": "+15550000000", "seq": 0}
    for attempt in range(3):
        status, text = await rig.post({**body, "seq": attempt}, type="voice")
        assert status == 200
        assert '"reject"' in text and '"say"' not in text and '"gather"' not in text
    rows = await rig.runtime.store.audit_rows("inbound_refused")
    assert [r["data"]["reason"] for r in rows] == ["not_in_allowlist"]
    assert rig.runtime.sessions == {}


async def test_number_route_chooses_flow_greeting_and_responder_settings(rig_factory) -> None:
    rig = await rig_factory(inboundPolicy="open", numbers={"+15550000001": {
        "inboundGreeting": "Sales line, hello!", "flow": "conversation",
        "responseSystemPrompt": "You sell boats."}})
    callee = Callee.from_script([{"wait": 100000}])
    sid = await rig.carrier.dial_in("+15550002222", "+15550000001", rig.runtime.public_url, callee)
    await _wait(lambda: any(s.record.provider_call_id == sid for s in rig.runtime.sessions.values()))
    session = next(s for s in rig.runtime.sessions.values() if s.record.provider_call_id == sid)
    assert session.record.flow == "conversation"
    assert session.record.message == "Sales line, hello!"
    assert session.record.route_settings == {"responseSystemPrompt": "You sell boats."}
    await _wait(lambda: "Sales line, hello!" in rig.carrier.calls[sid].heard)


async def test_restored_call_the_carrier_no_longer_knows_is_ended(rig_factory, tmp_path: Path) -> None:
    store = tmp_path / "store"
    rig = await rig_factory(store=store)
    rig.carrier.set_callee("+15550001111", Callee.from_script([{"answer": {"after": 1}}, {"wait": 100000}]))
    call_id = await rig.runtime.initiate(to="+15550001111", message="hi", mode="conversation")
    session = rig.runtime.sessions[call_id]
    await _wait(lambda: session.record.state == "listening")
    await rig.runtime.stop()
    again = await rig_factory(store=store)          # a new mock carrier: the old call is unknown (404)
    record = await again.runtime.wait_ended(call_id, 5)
    assert record.terminal


async def test_old_replay_keys_are_pruned_hourly(rig_factory, monkeypatch) -> None:
    from voicecall.engine import runtime as runtime_module

    monkeypatch.setattr(runtime_module, "MAINTENANCE_INTERVAL_S", 5)
    rig = await rig_factory()
    store, now = rig.runtime.store, rig.runtime.clock.now()
    assert await store.claim("mock:ancient", now - runtime_module.REPLAY_RETENTION_S - 10)
    assert await store.claim("mock:recent", now - 60)
    for _ in range(400):
        if not await store.seen("mock:ancient"):
            break
        await asyncio.sleep(0.01)
    assert not await store.seen("mock:ancient")
    assert await store.seen("mock:recent")


TIMED_FLOW = """
flow: timed
mode: conversation
description: Waits five seconds with its own timer, named like the supervisor's.
initial: initiated
states:
  initiated: {}
  waiting:
    do: [{say: "One moment."}, {pause: 100}]
    after: [{seconds: 5, event: max_duration}]
  wrapped:
    do: [{say: "Done waiting."}, {hangup: {}}]
  hangup-bot: {final: true}
  timeout: {final: true}
  completed: {final: true}
transitions:
  - {on: call.answered, from: initiated, to: waiting}
  - {on: timer.max_duration, from: waiting, to: wrapped}
  - {on: call.ended, from: "*", to: timeout, when: "event.reason == 'timeout'"}
  - {on: call.ended, from: wrapped, to: hangup-bot}
  - {on: call.ended, from: "*", to: completed}
"""


async def test_a_flow_timer_never_fires_the_supervisors_transition(rig_factory, tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "timed.yaml").write_text(TIMED_FLOW)
    rig = await rig_factory(flows={"paths": [str(flows)]}, maxDurationSeconds=3600)
    rig.carrier.set_callee("+15550001111", Callee.from_script([{"answer": {"after": 1}}]))
    call_id = await rig.runtime.initiate(to="+15550001111", flow="timed")
    record = await rig.runtime.wait_ended(call_id, 10)
    assert (record.state, record.end_reason) == ("hangup-bot", "hangup-bot")
    assert [t.text for t in record.transcript] == ["One moment.", "Done waiting."]
