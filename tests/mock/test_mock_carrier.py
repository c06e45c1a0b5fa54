"""MockCarrier end to end over loopback: MockProvider places calls through the
REST API, the carrier calls a real webhook server (the fake runtime in
conftest) with signed requests and runs the documents it gets back."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from mock_rig import Rig, make_rig

from voicecall.engine.clock import VirtualClock
from voicecall.engine.errors import ProviderError
from voicecall.engine.program import Program, Step
from voicecall.providers.base import CallRef, PlaceRequest
from voicecall.providers.callee import Callee
from voicecall.providers.mock import Chaos

FROM, TO = "+15550001111", "+15550002222"


def prog(*steps: Step) -> Program:
    return Program("s", steps)


def say(text: str) -> Step:
    return Step("say", {"text": text})


def gather(token: str, input_: str = "speech", **extra: Any) -> Step:
    return Step("gather", {"input": input_, "token": token, "timeout": 5, **extra})


HANGUP = Step("hangup", {})


async def place(rig: Rig, to: str = TO, **kw: Any) -> str:
    return await rig.provider.place(PlaceRequest("c1", FROM, to, rig.runtime.urls(), **kw))


def kinds(rig: Rig, sid: str) -> list[str]:
    return [e.kind for e in rig.carrier.log(sid)]


async def test_answers_after_delay_runs_the_document_and_hangs_up_when_it_runs_out(rig: Rig) -> None:
    rig.carrier.set_callee(TO, Callee.from_script([{"answer": {"after": 2}}]))
    rig.runtime.reply("voice", prog(say("Hello there"), Step("pause", {"seconds": 1})))
    sid = await place(rig)
    assert sid.startswith("MC") and len(sid) == 34
    call = await rig.carrier.wait_ended(sid)
    assert rig.runtime.kinds() == ["status/initiated", "status/ringing", "status/answered",
                                   "voice/answered", "status/ended"]
    assert [e.type for e in rig.runtime.events()] == [
        "call.initiated", "call.ringing", "call.answered", "call.answered", "call.ended"]
    assert rig.runtime.events()[-1].data == {"reason": "completed"}
    assert call.heard == ["Hello there"]
    assert call.status == "completed" and call.end_reason == "completed"
    log = rig.carrier.log(sid)
    answered_at = call.answered_at
    assert answered_at is not None
    first_status = next(e for e in log if e.kind == "request")
    assert answered_at >= first_status.at                      # answered after ringing, not at once
    assert kinds(rig, sid).index("heard") < kinds(rig, sid).index("ended")
    assert rig.runtime.refused == 0
    assert all(s.query["callId"] == "c1" for s in rig.runtime.seen)


@pytest.mark.parametrize(("script", "ring_timeout", "reason", "status"), [
    (["busy"], 30, "busy", "busy"),
    (["no-answer"], 30, "no-answer", "no-answer"),
    ([{"answer": {"after": 50}}], 5, "no-answer", "no-answer"),
    (["fail"], 30, "failed", "failed"),
])
async def test_unanswered_calls_end_with_their_reason_and_fetch_no_document(
        rig: Rig, script: list[Any], ring_timeout: int, reason: str, status: str) -> None:
    rig.carrier.set_callee(TO, Callee.from_script(script))
    sid = await place(rig, ring_timeout_s=ring_timeout)
    call = await rig.carrier.wait_ended(sid)
    assert call.status == status and call.answered_at is None
    assert not any(s.type == "voice" for s in rig.runtime.seen)
    ended = [e for e in rig.runtime.events() if e.type == "call.ended"]
    assert [e.data["reason"] for e in ended] == [reason]
    assert "call.answered" not in [e.type for e in rig.runtime.events()]


async def test_gather_answered_with_speech_posts_the_action_with_the_token(rig: Rig) -> None:
    rig.carrier.set_callee(TO, Callee.from_script([{"answer": {"after": 1}}, {"say": "a table for two"}]))
    rig.runtime.reply("voice", prog(gather("t1", prompt=(say("What would you like?"),))))
    rig.runtime.reply("gather", prog(say("Booked"), HANGUP))
    sid = await place(rig)
    call = await rig.carrier.wait_ended(sid)
    turn = next(s for s in rig.runtime.seen if s.type == "gather")
    assert turn.query == {"callId": "c1", "type": "gather", "token": "t1"}
    (event,) = turn.events
    assert (event.type, event.token, event.data["text"]) == ("speech.final", "t1", "a table for two")
    assert event.data["confidence"] == pytest.approx(0.93)
    assert call.heard == ["What would you like?", "Booked"]
    assert call.end_reason == "completed"
    assert not any(s.type == "noinput" for s in rig.runtime.seen)


async def test_gather_answered_with_digits(rig: Rig) -> None:
    rig.carrier.set_callee(TO, Callee.from_script([{"digits": "42#"}]))
    rig.runtime.reply("voice", prog(gather("t5", "dtmf")))
    rig.runtime.reply("gather", prog(HANGUP))
    sid = await place(rig)
    await rig.carrier.wait_ended(sid)
    event = next(e for e in rig.runtime.events() if e.type == "dtmf")
    assert (event.data["digits"], event.token) == ("42#", "t5")
    assert ("pressed", "42#") in [(e.kind, e.detail) for e in rig.carrier.log(sid)]


async def test_silence_falls_through_to_the_noinput_redirect(rig: Rig) -> None:
    rig.carrier.set_callee(TO, Callee.from_script([{"silence": {}}]))
    rig.runtime.reply("voice", prog(gather("t1"), say("never said")))
    rig.runtime.reply("noinput", prog(say("Goodbye"), HANGUP))
    sid = await place(rig)
    call = await rig.carrier.wait_ended(sid)
    noinput = next(s for s in rig.runtime.seen if s.type == "noinput")
    assert noinput.query["token"] == "t1"
    assert [e.type for e in noinput.events] == ["gather.timeout"]
    assert call.heard == ["Goodbye"]                       # the redirect came before the later say


async def test_push_interrupts_the_current_document(rig: Rig) -> None:
    rig.runtime.reply("voice", prog(say("Please hold"), Step("keepalive", {"seconds": 600})))
    sid = await place(rig)
    await rig.until(lambda: "heard" in kinds(rig, sid))
    await rig.provider.push(CallRef("c1", sid), prog(say("Thanks for holding"), HANGUP), rig.runtime.urls())
    call = await rig.carrier.wait_ended(sid)
    assert call.heard == ["Please hold", "Thanks for holding"]
    assert not any(s.type == "resume" for s in rig.runtime.seen)   # the keep-alive never finished
    assert call.end_reason == "completed"
    pushed = [e.detail for e in rig.carrier.log(sid) if e.kind == "document" and e.detail["source"] == "push"]
    assert pushed == [{"source": "push", "commands": [{"say": {"text": "Thanks for holding"}}, {"hangup": {}}]}]


async def test_hangup_via_rest_ends_the_call_once(rig: Rig) -> None:
    rig.runtime.reply("voice", prog(say("Please hold"), Step("keepalive", {"seconds": 600})))
    sid = await place(rig)
    await rig.until(lambda: "heard" in kinds(rig, sid))
    await rig.provider.hangup(CallRef("c1", sid))
    call = await rig.carrier.wait_ended(sid)
    assert call.status == "canceled"
    await rig.provider.hangup(CallRef("c1", sid))                   # already ended: fine
    await rig.provider.hangup(CallRef("c1", "MCnope"))               # unknown: fine (404)
    ended = [e for e in rig.runtime.events() if e.type == "call.ended"]
    assert [e.data["reason"] for e in ended] == ["hangup-bot"]
    with pytest.raises(ProviderError) as info:
        await rig.provider.push(CallRef("c1", sid), prog(say("late")), rig.runtime.urls())
    assert (info.value.status, info.value.carrier_code) == (400, 21220)


async def test_unknown_command_fails_the_call(rig: Rig) -> None:
    rig.runtime.reply("voice", {"commands": [{"say": {"text": "hi"}}, {"dance": {"style": "tango"}}]})
    sid = await place(rig)
    call = await rig.carrier.wait_ended(sid)
    assert call.end_reason == "failed" and call.heard == []        # checked whole, before running
    errors = [e.detail for e in rig.carrier.log(sid) if e.kind == "error"]
    assert len(errors) == 1 and "unknown command 'dance'" in errors[0]
    assert rig.runtime.events()[-1].data == {"reason": "failed"}


async def test_a_webhook_error_fails_the_call(rig: Rig) -> None:
    rig.runtime.reply("voice", {"ok": True})                        # an ack is not a document
    sid = await place(rig)
    call = await rig.carrier.wait_ended(sid)
    assert call.end_reason == "failed"
    assert any("commands" in e.detail for e in rig.carrier.log(sid) if e.kind == "error")


async def test_inline_document_then_resume_and_send_digits(rig: Rig) -> None:
    rig.runtime.reply("resume", prog(HANGUP))
    opening = prog(say("This is an inline message"), Step("keepalive", {"seconds": 1}))
    sid = await place(rig, opening=opening, send_digits="1w2")
    call = await rig.carrier.wait_ended(sid)
    assert not any(s.type == "voice" for s in rig.runtime.seen)     # inline: no first fetch
    assert [s.type for s in rig.runtime.seen if s.type not in ("status",)] == ["resume"]
    assert call.heard == ["This is an inline message"]
    entries = kinds(rig, sid)
    assert entries.index("dtmf") < entries.index("heard")
    assert call.end_reason == "completed"


async def test_time_limit_ends_the_call(rig: Rig) -> None:
    rig.runtime.reply("voice", prog(Step("keepalive", {"seconds": 600})))
    sid = await place(rig, time_limit_s=3)
    call = await rig.carrier.wait_ended(sid)
    assert call.end_reason == "completed" and "time-limit" in kinds(rig, sid)


async def test_callee_hangs_up_during_say(rig: Rig) -> None:
    rig.carrier.set_callee(TO, Callee.from_script([{"hangup": {"during": "say"}}]))
    rig.runtime.reply("voice", prog(say("A long message nobody wants"), say("never heard")))
    sid = await place(rig)
    call = await rig.carrier.wait_ended(sid)
    assert call.end_reason == "hangup-user" and call.heard == ["A long message nobody wants"]
    assert rig.runtime.events()[-1].data == {"reason": "hangup-user"}


async def test_callee_hangs_up_at_a_gather(rig: Rig) -> None:
    rig.carrier.set_callee(TO, Callee.from_script([{"hangup": {}}]))
    rig.runtime.reply("voice", prog(gather("t1")))
    sid = await place(rig)
    call = await rig.carrier.wait_ended(sid)
    assert call.end_reason == "hangup-user"
    assert not any(s.type in ("gather", "noinput") for s in rig.runtime.seen)


async def test_rest_validation_and_lookup(rig: Rig) -> None:
    with pytest.raises(ProviderError) as info:
        await place(rig, to="5550002222")
    assert (info.value.provider, info.value.status, info.value.carrier_code) == ("mock", 400, 21211)
    assert "not a valid phone number" in str(info.value)
    with pytest.raises(ProviderError) as info:
        await place(rig, send_digits="12x")
    assert info.value.carrier_code == 21479
    assert rig.carrier.calls == {}
    with pytest.raises(ProviderError) as info:
        await rig.provider.push(CallRef("c1", "MCnope"), prog(say("x")), rig.runtime.urls())
    assert info.value.status == 404


async def test_unreachable_carrier_is_a_retryable_provider_error(tmp_path: Path) -> None:
    async with make_rig(tmp_path) as rig:
        await rig.carrier.stop()
        with pytest.raises(ProviderError) as info:
            await place(rig)
        assert info.value.retryable


async def test_every_request_is_signed_and_a_wrong_secret_is_refused(tmp_path: Path) -> None:
    async with make_rig(tmp_path, secret=b"\x02" * 32) as rig:
        rig.runtime.reply("voice", prog(say("never heard")))
        sid = await place(rig)
        call = await rig.carrier.wait_ended(sid)
        assert rig.runtime.seen == [] and rig.runtime.refused >= 4   # initiated ringing answered voice ended
        assert call.end_reason == "failed" and call.heard == []
        assert any("401" in e.detail for e in rig.carrier.log(sid) if e.kind == "error")


async def test_inbound_call_answered_by_a_document(rig: Rig) -> None:
    rig.runtime.call_id = "in1"
    rig.runtime.reply("voice", prog(say("Thanks for calling"), gather("t1")))
    rig.runtime.reply("gather", prog(HANGUP))
    sid = await rig.carrier.dial_in(FROM, TO, rig.runtime.url, Callee.from_script([{"say": "opening hours"}]))
    call = await rig.carrier.wait_ended(sid)
    first = rig.runtime.seen[0]
    assert first.query == {"type": "voice"}
    (event,) = first.events
    assert (event.type, dict(event.data)) == ("call.initiated", {"direction": "inbound", "from": FROM, "to": TO})
    turn = next(s for s in rig.runtime.seen if s.type == "gather")
    assert turn.query["callId"] == "in1" and turn.events[0].data["text"] == "opening hours"
    assert call.heard == ["Thanks for calling"] and call.direction == "inbound"
    assert rig.runtime.kinds()[-1] == "status/ended"


async def test_inbound_call_rejected_is_never_answered(rig: Rig) -> None:
    rig.runtime.reply("voice", prog(Step("reject", {"reason": "rejected"})))
    sid = await rig.carrier.dial_in(FROM, TO, rig.runtime.url)
    call = await rig.carrier.wait_ended(sid)
    assert call.answered_at is None and call.heard == [] and call.status == "canceled"
    assert rig.runtime.events()[-1].data == {"reason": "hangup-bot"}
    with pytest.raises(ValueError, match=r"E\.164"):
        await rig.carrier.dial_in("12", TO, rig.runtime.url)


async def chaos_run(tmp_path: Path, seed: int) -> list[tuple[str, int]]:
    async with make_rig(tmp_path, chaos=Chaos(seed, duplicate=0.4, reorder=0.4)) as rig:
        rig.runtime.reply("voice", prog(say("hi"), HANGUP))
        sid = await place(rig)
        await rig.carrier.wait_ended(sid)
        return [(s.body["event"], s.body["seq"]) for s in rig.runtime.seen if s.type == "status"]


async def test_chaos_duplicates_and_reorders_deterministically(tmp_path: Path) -> None:
    runs = {seed: await chaos_run(tmp_path / str(seed), seed) for seed in range(6)}
    again = await chaos_run(tmp_path / "again", 3)
    assert again == runs[3]
    plain = ["initiated", "ringing", "answered", "ended"]
    for delivered in runs.values():
        assert sorted({e for e, _ in delivered}, key=plain.index) == plain        # nothing lost
        assert [e for e, _ in delivered].count("ended") in (1, 2)
    assert any(len(d) > len(set(d)) for d in runs.values())                   # some duplicate
    assert any([s for _, s in d] != sorted(s for _, s in d) for d in runs.values())  # some out of order
    assert len({tuple(d) for d in runs.values()}) > 1                         # the seed matters


def test_chaos_rejects_bad_probabilities() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        Chaos(1, duplicate=1.5)


async def test_runs_on_virtual_time(tmp_path: Path) -> None:
    """With a VirtualClock a ten-minute keep-alive costs no real time: whoever owns
    the clock advances it whenever the carrier only waits on it."""
    clock = VirtualClock()
    async with make_rig(tmp_path, clock=clock, time_scale=1.0) as rig:
        rig.runtime.reply("voice", prog(say("Hold on"), Step("keepalive", {"seconds": 600})))
        rig.runtime.reply("resume", prog(say("Still there?"), HANGUP))
        sid = await place(rig)
        start = clock.now()
        while not rig.carrier.calls[sid].finished.is_set():
            await asyncio.sleep(0.002)              # let real loopback I/O settle
            clock.advance_to_next()
        call = rig.carrier.calls[sid]
        assert call.heard == ["Hold on", "Still there?"]
        assert clock.now() - start >= 601                        # 1 s ring + 600 s pause, virtually
        assert [e.at for e in call.log] == sorted(e.at for e in call.log)
        assert rig.runtime.refused == 0


@pytest.mark.parametrize("answered_by", ["human", "machine"])
async def test_machine_detection_reports_before_the_document(rig: Rig, answered_by: str) -> None:
    rig.carrier.set_callee(TO, Callee(), answered_by=answered_by)
    rig.runtime.reply("voice", prog(say("Hello"), HANGUP))
    sid = await place(rig, machine_detection=True)
    await rig.carrier.wait_ended(sid)
    kinds_ = rig.runtime.kinds()
    assert kinds_.index("machine/machine") < kinds_.index("voice/answered")
    event = next(e for e in rig.runtime.events() if e.type == "machine.detected")
    assert event.data == {"answeredBy": answered_by}
    with pytest.raises(ValueError, match="answered_by"):
        rig.carrier.set_callee(TO, Callee(), answered_by="robot")


async def test_no_machine_callback_without_detection(rig: Rig) -> None:
    rig.runtime.reply("voice", prog(HANGUP))
    sid = await place(rig)
    await rig.carrier.wait_ended(sid)
    assert not any(s.type == "machine" for s in rig.runtime.seen)


async def test_rest_api_directly(rig: Rig) -> None:
    import aiohttp

    base = rig.carrier.base_url
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/v1/calls", data=b"{nope") as resp:
            assert resp.status == 400 and (await resp.json())["code"] == 20001
        body = {"to": TO, "from": FROM, "url": "ftp://x"}
        async with http.post(f"{base}/v1/calls", json=body) as resp:
            assert resp.status == 400 and (await resp.json())["code"] == 21205
        body = {"to": TO, "from": "nobody", "url": rig.runtime.url}
        async with http.post(f"{base}/v1/calls", json=body) as resp:
            assert resp.status == 400 and (await resp.json())["code"] == 21212
        async with http.get(f"{base}/v1/calls/MCmissing") as resp:
            assert resp.status == 404 and (await resp.json())["code"] == 20404
        rig.runtime.reply("voice", prog(say("hi"), Step("keepalive", {"seconds": 600})))
        body = {"to": TO, "from": FROM, "url": rig.runtime.url + "?callId=c1&type=voice"}
        async with http.post(f"{base}/v1/calls", json=body) as resp:
            assert resp.status == 201
            created = await resp.json()
        assert created["status"] == "queued" and created["sid"].startswith("MC")
        sid = created["sid"]
        await rig.until(lambda: rig.carrier.calls[sid].status == "in-progress")
        async with http.post(f"{base}/v1/calls/{sid}", json={"colour": "blue"}) as resp:
            assert resp.status == 400
        async with http.post(f"{base}/v1/calls/{sid}", json={"status": "completed"}) as resp:
            assert resp.status == 200
        await rig.carrier.wait_ended(sid)
        async with http.get(f"{base}/v1/calls/{sid}") as resp:
            assert await resp.json() == {"sid": sid, "status": "canceled", "direction": "outbound",
                                         "from": FROM, "to": TO, "endReason": "canceled"}
