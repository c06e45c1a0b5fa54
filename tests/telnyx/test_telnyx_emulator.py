"""The emulator toward a fake webhook that verifies every event with our
verifier, driven by our provider as the engine would drive it."""

from __future__ import annotations

import asyncio

import pytest
from telnyx_support import FakeWebhook

from voicecall.engine.program import Step
from voicecall.providers.base import CallRef, CallUrls, PlaceRequest
from voicecall.providers.callee import Callee
from voicecall.providers.telnyx import TelnyxProvider
from voicecall.providers.telnyx.emulator import Chaos, TelnyxEmulator


async def test_outbound_call_speak_gather_hangup(emulator: TelnyxEmulator, provider: TelnyxProvider,
                                                  webhook: FakeWebhook) -> None:
    emulator.set_callee("+15550002000", Callee.from_script([{"answer": {"after": 1}}, {"digits": "42#"}]))
    urls = CallUrls(webhook.url, "call-1")
    ccid = await provider.place(PlaceRequest("call-1", "+15550001000", "+15550002000", urls))
    ref = CallRef("call-1", ccid)

    initiated = await webhook.next("call.initiated")
    assert (initiated.call_id, initiated.provider_call_id) == ("call-1", ccid)
    assert initiated.data == {"direction": "outbound"}
    answered = await webhook.next("call.answered")
    assert answered.call_id == "call-1"

    await provider.execute(ref, Step("say", {"text": "Hello there, this is a test"}), urls, "tag-1")
    done = await webhook.next("playback.done")
    assert (done.token, done.call_id) == ("tag-1", "call-1")

    gather = Step("gather", {"input": "dtmf", "token": "turn-1", "timeout": 5, "numDigits": 4,
                             "prompt": (Step("say", {"text": "Enter your code"}),)})
    await provider.execute(ref, gather, urls, "tag-2")
    dtmf = await webhook.next("dtmf", "gather.timeout")
    assert (dtmf.type, dtmf.data, dtmf.token) == ("dtmf", {"digits": "42"}, "turn-1")

    assert await provider.hangup(ref) is True
    ended = await webhook.next("call.ended")
    assert ended.data["reason"] == "completed" and ended.data["cause"] == "normal_clearing"
    call = await emulator.wait_ended(ccid)
    assert call.heard == ["Hello there, this is a test", "Enter your code"]
    assert webhook.bad_signatures == 0
    assert webhook.types() == ["call.initiated", "call.answered", "call.speak.started", "call.speak.ended",
                               "call.dtmf.received", "call.dtmf.received", "call.dtmf.received",
                               "call.gather.ended", "call.hangup"]
    names = [e.detail["name"] for e in emulator.log(ccid) if e.kind == "command"]
    assert names == ["dial", "speak", "gather_using_speak", "hangup"]
    # After hang-up Telnyx no longer runs commands on the call: a second hang-up is "already gone".
    assert await provider.hangup(ref) is False


async def test_inbound_call_answered_then_speech(emulator: TelnyxEmulator, provider: TelnyxProvider,
                                                 webhook: FakeWebhook) -> None:
    caller = Callee.from_script([{"say": "I would like a table"}])
    ccid = await emulator.dial_in("+15550003000", "+15550001000", webhook.url, caller)
    initiated = await webhook.next("call.initiated")
    assert initiated.call_id is None and initiated.provider_call_id == ccid
    assert initiated.data == {"direction": "inbound", "from": "+15550003000", "to": "+15550001000"}

    urls = CallUrls(webhook.url, "call-in")
    ref = CallRef("call-in", ccid)
    await provider.answer(ref, urls)
    answered = await webhook.next("call.answered")
    assert answered.call_id == "call-in"          # client_state of the answer command

    gather = Step("gather", {"input": "speech", "token": "turn-9", "timeout": 5,
                             "prompt": (Step("say", {"text": "How can I help?"}),)})
    await provider.execute(ref, gather, urls, "tag-g")
    speech = await webhook.next("speech.final")
    assert (speech.data["text"], speech.token, speech.call_id) == ("I would like a table", "turn-9", "call-in")

    # The next step stops the transcription before speaking.
    await provider.execute(ref, Step("say", {"text": "Sure"}), urls, "tag-s")
    assert (await webhook.next("playback.done")).token == "tag-s"
    await provider.execute(ref, Step("hangup", {}), urls, "tag-h")
    assert (await webhook.next("call.ended")).data["reason"] == "completed"
    names = [e.detail["name"] for e in emulator.log(ccid) if e.kind == "command"]
    assert names == ["answer", "speak", "transcription_start", "transcription_stop", "speak", "hangup"]
    # The prompt's end only started the transcription: the engine saw one playback.done, for "Sure".
    log = [e.kind for e in emulator.log(ccid) if e.kind in ("heard", "command")]
    assert log[:4] == ["command", "command", "heard", "command"]
    assert emulator.calls[ccid].heard == ["How can I help?", "Sure"]
    assert webhook.bad_signatures == 0


async def test_inbound_call_never_answered_rings_until_the_caller_gives_up(
        emulator: TelnyxEmulator, webhook: FakeWebhook) -> None:
    ccid = await emulator.dial_in("+15550003000", "+15550001000", webhook.url)
    await webhook.next("call.initiated")
    ended = await webhook.next("call.ended", timeout=10)
    assert (ended.data["cause"], ended.data["reason"]) == ("originator_cancel", "hangup-user")
    await emulator.wait_ended(ccid)


async def _place(provider: TelnyxProvider, webhook: FakeWebhook, **extra: object) -> str:
    return await provider.place(PlaceRequest("call-1", "", "+15550002000", CallUrls(webhook.url, "call-1"),
                                             **extra))


@pytest.mark.parametrize("script, reason, cause", [
    ([{"busy": {}}], "busy", "user_busy"),
    ([{"no-answer": {}}], "no-answer", "timeout"),
    ([{"answer": {"after": 40}}], "no-answer", "timeout"),
    ([{"fail": {}}], "failed", "not_found"),
])
async def test_ring_outcomes(emulator: TelnyxEmulator, provider: TelnyxProvider, webhook: FakeWebhook,
                             script: list[object], reason: str, cause: str) -> None:
    emulator.set_callee("+15550002000", Callee.from_script(script))
    ccid = await _place(provider, webhook)
    ended = await webhook.next("call.ended", "call.answered")
    assert (ended.type, ended.data["reason"], ended.data["cause"]) == ("call.ended", reason, cause)
    assert (await emulator.wait_ended(ccid)).hangup_cause == cause


async def test_time_limit_ends_the_call(emulator: TelnyxEmulator, provider: TelnyxProvider,
                                        webhook: FakeWebhook) -> None:
    ccid = await _place(provider, webhook, time_limit_s=30)
    await webhook.next("call.answered")
    assert (await webhook.next("call.ended")).data["reason"] == "timeout"
    assert emulator.calls[ccid].hangup_cause == "time_limit"


async def test_callee_hangs_up_while_we_speak(emulator: TelnyxEmulator, provider: TelnyxProvider,
                                              webhook: FakeWebhook) -> None:
    emulator.set_callee("+15550002000", Callee.from_script([{"answer": {"after": 1}}, {"hangup": {"during": "say"}}]))
    ccid = await _place(provider, webhook)
    await webhook.next("call.answered")
    await provider.execute(CallRef("call-1", ccid), Step("say", {"text": "a long message"}),
                           CallUrls(webhook.url, "call-1"), "t")
    ended = await webhook.next("call.ended", "playback.done")
    assert (ended.type, ended.data["reason"], ended.data["source"]) == ("call.ended", "completed", "callee")


async def test_silent_dtmf_gather_times_out_with_its_token(emulator: TelnyxEmulator, provider: TelnyxProvider,
                                                           webhook: FakeWebhook) -> None:
    emulator.set_callee("+15550002000", Callee.from_script([{"answer": {"after": 1}}, {"silence": {}}]))
    ccid = await _place(provider, webhook)
    await webhook.next("call.answered")
    await provider.execute(CallRef("call-1", ccid), Step("gather", {"input": "dtmf", "token": "T7", "timeout": 3}),
                           CallUrls(webhook.url, "call-1"), "t")
    timeout = await webhook.next("gather.timeout", "dtmf")
    assert (timeout.type, timeout.token) == ("gather.timeout", "T7")


async def _chaotic_call(chaos: Chaos, provider: TelnyxProvider, webhook: FakeWebhook) -> TelnyxEmulator:
    from telnyx_support import API_KEY, SCALE

    emu = TelnyxEmulator(API_KEY, time_scale=SCALE, chaos=chaos)
    await emu.start()
    provider.rest.base_url = emu.base_url
    provider._public_key = emu.public_key_b64
    emu.set_callee("+15550002000", Callee.from_script([{"answer": {"after": 1}}]))
    ccid = await _place(provider, webhook)
    await asyncio.wait_for(emu.calls[ccid].answered.wait(), 5)     # call.answered itself may be held back
    await provider.execute(CallRef("call-1", ccid), Step("say", {"text": "hi"}), CallUrls(webhook.url, "call-1"), "t")
    while not emu.calls[ccid].heard:
        await asyncio.sleep(0.01)
    await provider.hangup(CallRef("call-1", ccid))
    await emu.wait_ended(ccid)
    await emu.stop()
    return emu


async def test_chaos_duplicates_every_event_with_the_same_id(provider: TelnyxProvider, webhook: FakeWebhook) -> None:
    await _chaotic_call(Chaos(seed=1, duplicate=1.0), provider, webhook)
    ids = [b["data"]["id"] for b in webhook.bodies]
    assert len(ids) >= 8 and ids[0::2] == ids[1::2]
    assert webhook.bad_signatures == 0


async def test_chaos_holds_events_past_the_hangup(provider: TelnyxProvider, webhook: FakeWebhook) -> None:
    await _chaotic_call(Chaos(seed=1, reorder=1.0), provider, webhook)
    types = webhook.types()
    # Everything was held back and arrives after the final event, still in its own order.
    assert types[:4] == ["call.hangup", "call.initiated", "call.answered", "call.speak.started"]
    assert len({b["data"]["id"] for b in webhook.bodies}) == len(types)


async def _speech_gather_in_flight(emulator: TelnyxEmulator, provider: TelnyxProvider,
                                   webhook: FakeWebhook) -> tuple[CallRef, CallUrls, asyncio.Task[None]]:
    emulator.set_callee("+15550002000", Callee.from_script([{"answer": {"after": 1}}, {"say": "too late"}]))
    ccid = await _place(provider, webhook)
    await webhook.next("call.answered")
    ref, urls = CallRef("call-1", ccid), CallUrls(webhook.url, "call-1")
    prompt = " ".join(["word"] * 30)
    gather = Step("gather", {"input": "speech", "token": "old", "prompt": (Step("say", {"text": prompt}),)})
    task = asyncio.create_task(provider.execute(ref, gather, urls, "g"))
    while not emulator.calls[ccid].heard:
        await asyncio.sleep(0.005)
    return ref, urls, task


async def test_a_newer_step_silences_a_gather_still_waiting_for_its_prompt(
        emulator: TelnyxEmulator, provider: TelnyxProvider, webhook: FakeWebhook) -> None:
    ref, urls, task = await _speech_gather_in_flight(emulator, provider, webhook)
    await provider.execute(ref, Step("say", {"text": "One moment"}), urls, "s")
    await task
    assert (await webhook.next("playback.done")).token == "s"
    names = [e.detail["name"] for e in emulator.log(ref.provider_call_id or "") if e.kind == "command"]
    assert names == ["dial", "speak", "speak"]          # never transcription_start for the old turn


async def test_hanging_up_releases_a_gather_waiting_for_its_prompt(
        emulator: TelnyxEmulator, provider: TelnyxProvider, webhook: FakeWebhook) -> None:
    ref, _, task = await _speech_gather_in_flight(emulator, provider, webhook)
    assert await provider.hangup(ref) is True
    await asyncio.wait_for(task, 5)
    names = [e.detail["name"] for e in emulator.log(ref.provider_call_id or "") if e.kind == "command"]
    assert "transcription_start" not in names and names[-1] == "hangup"
