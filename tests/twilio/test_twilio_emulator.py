"""The emulator toward a webhook: signed requests, TwiML execution, falling through,
running out, unknown verbs, inbound calls, and seeded chaos."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from twilio_support import SID, TOKEN, FakeWebhook, created, heard, make_settings

from voicecall.engine.program import Program, Step
from voicecall.providers.base import CallUrls, PlaceRequest
from voicecall.providers.callee import Callee
from voicecall.providers.twilio import TwilioEmulator, TwilioProvider
from voicecall.providers.twilio.render import render_twiml

TO = "+14155551212"


def twiml(webhook: FakeWebhook, *steps: Step) -> str:
    return render_twiml(Program("s", steps), CallUrls(webhook.url, "c1"))


@pytest.fixture
async def provider(emulator: TwilioEmulator) -> AsyncIterator[TwilioProvider]:
    p = TwilioProvider(make_settings(apiBaseUrl=emulator.base_url))
    yield p
    await p.close()


async def call(provider: TwilioProvider, webhook: FakeWebhook, opening: Program | None = None) -> str:
    return await provider.place(PlaceRequest(call_id="c1", from_number="+15005550006", to_number=TO,
                                             urls=CallUrls(webhook.url, "c1"), opening=opening))


def kinds(emulator: TwilioEmulator, sid: str) -> list[str]:
    return [e.kind for e in emulator.log(sid) if e.kind not in ("request", "document")]


async def test_notify_inline_say_pause_hangup(provider: TwilioProvider, emulator: TwilioEmulator,
                                              webhook: FakeWebhook) -> None:
    opening = Program("answered", (Step("say", {"text": "Your table is ready"}), Step("pause", {"seconds": 3}),
                                   Step("hangup", {})))
    sid = await call(provider, webhook, opening)
    final = await emulator.wait_ended(sid, 5)
    assert final["status"] == "completed" and final["direction"] == "outbound-api"
    statuses = webhook.of("status")
    assert [(p["CallStatus"], p["SequenceNumber"]) for p in statuses] == [
        ("initiated", "0"), ("ringing", "1"), ("in-progress", "2"), ("completed", "3")]
    assert all(p["CallSid"] == sid and p["AccountSid"] == SID and p["CallbackSource"] == "call-progress-events"
               and p["Timestamp"].endswith("GMT") for p in statuses)
    assert "CallDuration" in statuses[-1] and all("CallDuration" not in p for p in statuses[:-1])
    assert kinds(emulator, sid)[-3:] == ["heard", "hangup", "ended"]
    (document,) = [e.detail for e in emulator.log(sid) if e.kind == "document"]
    assert document["source"] == "inline"
    assert document["commands"] == [{"say": {"voice": "Polly.Joanna", "text": "Your table is ready"}},
                                    {"pause": {"seconds": "3"}}, {"hangup": {}}]
    assert webhook.bad_signatures == 0 and webhook.of("voice") == []


async def test_gather_speech_posts_to_action(provider: TwilioProvider, emulator: TwilioEmulator,
                                             webhook: FakeWebhook) -> None:
    emulator.set_callee(TO, Callee.from_script([{"answer": {"after": 1}}, {"say": "I'd like a table"}]))
    webhook.replies["voice"] = twiml(webhook, Step("gather", {"input": "speech", "token": "t1", "timeout": 5,
                                                              "prompt": (Step("say", {"text": "How can I help?"}),)}))
    webhook.replies["gather"] = twiml(webhook, Step("say", {"text": "Booked."}), Step("hangup", {}))
    sid = await call(provider, webhook)
    await emulator.wait_ended(sid, 5)
    (result,) = webhook.of("gather")
    assert (result["SpeechResult"], result["Confidence"], result["CallStatus"]) == ("I'd like a table", "0.92",
                                                                                    "in-progress")
    assert webhook.of("noinput") == []
    assert heard(emulator, sid) == ["How can I help?", "Booked."]
    assert [e.detail for e in emulator.log(sid) if e.kind == "said"] == ["I'd like a table"]
    assert [e.detail["source"] for e in emulator.log(sid) if e.kind == "document"] == ["voice", "gather"]
    assert webhook.requests[[t for t, _ in webhook.requests].index("gather")][0] == "gather"
    assert webhook.bad_signatures == 0


async def test_gather_digits_respect_num_digits(provider: TwilioProvider, emulator: TwilioEmulator,
                                                webhook: FakeWebhook) -> None:
    emulator.set_callee(TO, Callee.from_script([{"digits": "1234#9"}]))
    webhook.replies["voice"] = twiml(webhook, Step("gather", {"input": "dtmf", "token": "t1", "numDigits": 3}))
    webhook.replies["gather"] = twiml(webhook, Step("hangup", {}))
    sid = await call(provider, webhook)
    await emulator.wait_ended(sid, 5)
    assert webhook.of("gather")[0]["Digits"] == "123"


async def test_no_input_falls_through_to_the_noinput_redirect(provider: TwilioProvider, emulator: TwilioEmulator,
                                                              webhook: FakeWebhook) -> None:
    webhook.replies["voice"] = twiml(webhook, Step("gather", {"input": "speech", "token": "t1", "timeout": 2}))
    webhook.replies["noinput"] = twiml(webhook, Step("say", {"text": "Goodbye"}), Step("hangup", {}))
    sid = await call(provider, webhook)
    assert (await emulator.wait_ended(sid, 5))["status"] == "completed"
    assert webhook.of("gather") == [] and len(webhook.of("noinput")) == 1
    assert kinds(emulator, sid).index("gather-timeout") < kinds(emulator, sid).index("heard")


async def test_a_document_that_runs_out_hangs_up(provider: TwilioProvider, emulator: TwilioEmulator,
                                                 webhook: FakeWebhook) -> None:
    webhook.replies["voice"] = twiml(webhook, Step("say", {"text": "Hello"}))
    sid = await call(provider, webhook)
    assert (await emulator.wait_ended(sid, 5))["status"] == "completed"
    assert kinds(emulator, sid)[-2:] == ["document-ended", "ended"]


async def test_keepalive_redirects_until_hung_up(provider: TwilioProvider, emulator: TwilioEmulator,
                                                 webhook: FakeWebhook) -> None:
    webhook.replies["voice"] = twiml(webhook, Step("keepalive", {"seconds": 1}))
    resumes: list[int] = []

    def resume(form: dict[str, str]) -> str:
        resumes.append(1)
        last = len(resumes) >= 3
        return twiml(webhook, Step("hangup", {})) if last else twiml(webhook, Step("keepalive", {"seconds": 1}))

    webhook.replies["resume"] = resume
    sid = await call(provider, webhook)
    await emulator.wait_ended(sid, 5)
    assert len(webhook.of("resume")) == 3


@pytest.mark.parametrize(("document", "code"), [
    ('<?xml version="1.0" encoding="UTF-8"?><Response><Say>Hi</Say><Dance/></Response>', 12200),
    ('<?xml version="1.0" encoding="UTF-8"?><Response><Say>Hi</Say>', 12100),
    ('<?xml version="1.0" encoding="UTF-8"?><Document><Say>Hi</Say></Document>', 12100),
])
async def test_bad_documents_are_application_errors(provider: TwilioProvider, emulator: TwilioEmulator,
                                                    webhook: FakeWebhook, document: str, code: int) -> None:
    webhook.replies["voice"] = document
    sid = await call(provider, webhook)
    await emulator.wait_ended(sid, 5)
    (error,) = [e.detail for e in emulator.log(sid) if e.kind == "error"]
    assert error["code"] == code
    # Nothing of the bad document is played; the caller hears Twilio's apology.
    apology = "We are sorry, an application error has occurred. Goodbye."
    assert heard(emulator, sid) == [apology]


async def test_webhook_failure_is_11200(provider: TwilioProvider, emulator: TwilioEmulator,
                                        webhook: FakeWebhook) -> None:
    webhook.failing.add("voice")
    sid = await call(provider, webhook)
    await emulator.wait_ended(sid, 5)
    assert [e.detail["code"] for e in emulator.log(sid) if e.kind == "error"] == [11200]
    fetches = [e.detail for e in emulator.log(sid) if e.kind == "request" and e.detail["type"] == "voice"]
    assert [f["status"] for f in fetches] == [500]


@pytest.mark.parametrize(("script", "status"), [
    ([{"busy": {}}], "busy"), ([{"no-answer": {}}], "no-answer"), ([{"fail": {}}], "failed")])
async def test_callee_that_never_answers(provider: TwilioProvider, emulator: TwilioEmulator, webhook: FakeWebhook,
                                         script: list[dict[str, dict[str, object]]], status: str) -> None:
    emulator.set_callee(TO, Callee.from_script(script))
    sid = await call(provider, webhook)
    assert (await emulator.wait_ended(sid, 5))["status"] == status
    assert webhook.of("status")[-1]["CallStatus"] == status and webhook.of("voice") == []


async def test_callee_hangs_up_during_say(provider: TwilioProvider, emulator: TwilioEmulator,
                                          webhook: FakeWebhook) -> None:
    emulator.set_callee(TO, Callee.from_script([{"hangup": {"during": "say"}}]))
    webhook.replies["voice"] = twiml(webhook, Step("say", {"text": "A long message"}), Step("pause", {"seconds": 9}),
                                     Step("say", {"text": "never heard"}))
    sid = await call(provider, webhook)
    await emulator.wait_ended(sid, 5)
    assert [e.detail for e in emulator.log(sid) if e.kind == "hangup"] == ["callee"]
    assert heard(emulator, sid) == ["A long message"]


async def test_inbound_reject_and_answer(emulator: TwilioEmulator, webhook: FakeWebhook) -> None:
    webhook.replies["voice"] = twiml(webhook, Step("reject", {}))
    rejected = await emulator.dial_in("+14155550100", "+15005550006", f"{webhook.url}?type=voice")
    assert (await emulator.wait_ended(rejected, 5))["status"] == "no-answer"
    (first,) = webhook.of("voice")
    assert (first["Direction"], first["CallStatus"], first["From"]) == ("inbound", "ringing", "+14155550100")
    webhook.replies["voice"] = twiml(webhook, Step("say", {"text": "Hello caller"}), Step("hangup", {}))
    answered = await emulator.dial_in("+14155550100", "+15005550006", f"{webhook.url}?type=voice",
                                      status_callback=f"{webhook.url}?type=status")
    assert (await emulator.wait_ended(answered, 5))["status"] == "completed"
    assert [p["CallStatus"] for p in webhook.of("status") if p["CallSid"] == answered] == [
        "ringing", "in-progress", "completed"]
    # The number's status callback defaults to the webhook with type=status (DESIGN §8).
    assert [p["CallStatus"] for p in webhook.of("status") if p["CallSid"] == rejected] == ["ringing", "no-answer"]
    quiet = await emulator.dial_in("+14155550100", "+15005550006", f"{webhook.url}?type=voice", status_callback="")
    await emulator.wait_ended(quiet, 5)
    assert not [p for p in webhook.of("status") if p["CallSid"] == quiet]
    assert webhook.bad_signatures == 0


async def test_chaos_duplicates_and_reorders_callbacks_deterministically(webhook: FakeWebhook) -> None:
    seen: list[list[tuple[str, str]]] = []
    for _ in range(2):
        emu = TwilioEmulator(SID, TOKEN, chaos={"seed": 7, "duplicate": 0.5, "reorder": 0.5}, time_scale=0.01)
        await emu.start()
        provider = TwilioProvider(make_settings(apiBaseUrl=emu.base_url))
        webhook.requests.clear()
        try:
            sid = await call(provider, webhook, Program("a", (Step("hangup", {}),)))
            await emu.wait_ended(sid, 5)
        finally:
            await provider.close()
            await emu.stop()
        seen.append([(p["CallStatus"], p["SequenceNumber"]) for p in webhook.of("status")])
    assert seen[0] == seen[1]                       # seeded: the same misbehaviour every run
    got = seen[0]
    assert len(got) > 4                             # some callbacks came twice
    assert sorted(set(got), key=lambda x: x[1]) == [("initiated", "0"), ("ringing", "1"), ("in-progress", "2"),
                                                    ("completed", "3")]
    assert [s for s, _ in got] != sorted((s for s, _ in got), key=["initiated", "ringing", "in-progress",
                                                                   "completed"].index)  # and out of order


async def test_rest_update_when_not_in_progress_is_21220(provider: TwilioProvider, emulator: TwilioEmulator,
                                                         webhook: FakeWebhook) -> None:
    sid = await call(provider, webhook, Program("a", (Step("hangup", {}),)))
    await emulator.wait_ended(sid, 5)
    from voicecall.engine.errors import ProviderError
    from voicecall.providers.base import CallRef

    with pytest.raises(ProviderError, match="21220"):
        await provider.push(CallRef("c1", sid), Program("s", (Step("say", {"text": "late"}),)),
                            CallUrls(webhook.url, "c1"))


async def test_amd_answer_reaches_the_parser(provider: TwilioProvider, emulator: TwilioEmulator,
                                             webhook: FakeWebhook) -> None:
    from voicecall.providers.base import WebhookRequest

    emulator.set_callee(TO, Callee(), answered_by="machine_start")
    webhook.replies["voice"] = twiml(webhook, Step("hangup", {}))
    sid = await provider.place(PlaceRequest(call_id="c1", from_number="+15005550006", to_number=TO,
                                            urls=CallUrls(webhook.url, "c1"), machine_detection=True))
    await emulator.wait_ended(sid, 5)
    assert created(emulator, sid)["MachineDetection"] == ["Enable"]
    form = tuple(webhook.of("voice")[0].items())
    req = WebhookRequest("POST", webhook.hook("voice"), "/voice/webhook", (("callId", "c1"), ("type", "voice")),
                         {}, b"", form)
    assert [e.type for e in provider.parse(req)] == ["call.answered", "machine.detected"]


async def test_push_of_a_long_program_sends_the_call_to_fetch_it(provider: TwilioProvider,
                                                                 emulator: TwilioEmulator,
                                                                 webhook: FakeWebhook) -> None:
    from voicecall.providers.base import CallRef

    webhook.replies["voice"] = twiml(webhook, Step("keepalive", {"seconds": 300}))
    webhook.replies["resume"] = twiml(webhook, Step("say", {"text": "served on fetch"}), Step("hangup", {}))
    sid = await call(provider, webhook)
    for _ in range(300):
        if webhook.of("voice"):
            break
        await emulator.sleep(1)
    long = Program("s", (Step("say", {"text": "word " * 900}), Step("hangup", {})))
    await provider.push(CallRef("c1", sid), long, CallUrls(webhook.url, "c1"))
    await emulator.wait_ended(sid, 5)
    update = next(e.detail for e in emulator.log(sid) if e.kind == "rest" and "url" in e.detail)
    assert update["twiml"] is None and update["url"] == webhook.hook("resume")
    assert "served on fetch" in heard(emulator, sid)


async def test_hangup_while_ringing_cancels_for_good(provider: TwilioProvider, emulator: TwilioEmulator,
                                                     webhook: FakeWebhook) -> None:
    from voicecall.providers.base import CallRef

    emulator.set_callee(TO, Callee.from_script([{"answer": {"after": 20}}]))
    sid = await call(provider, webhook)
    await provider.hangup(CallRef("c1", sid))
    assert (await emulator.wait_ended(sid, 5))["status"] == "canceled"
    await emulator.sleep(25)                     # past the callee's answer time
    assert emulator.calls[sid].status == "canceled" and webhook.of("voice") == []
    statuses = [p["CallStatus"] for p in webhook.of("status")]
    assert statuses[-1] == "canceled" and "in-progress" not in statuses


async def test_relative_action_and_action_on_empty_result(provider: TwilioProvider, emulator: TwilioEmulator,
                                                          webhook: FakeWebhook) -> None:
    webhook.replies["voice"] = ('<?xml version="1.0" encoding="UTF-8"?><Response><Gather input="dtmf" timeout="1" '
                                'action="webhook?callId=c1&amp;type=gather" actionOnEmptyResult="true"/>'
                                '<Say>not reached</Say></Response>')
    webhook.replies["gather"] = twiml(webhook, Step("hangup", {}))
    sid = await call(provider, webhook)
    await emulator.wait_ended(sid, 5)
    assert webhook.of("gather")[0]["Digits"] == ""
    assert heard(emulator, sid) == []
