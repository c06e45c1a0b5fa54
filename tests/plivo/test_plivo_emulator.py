"""The emulator toward a fake webhook: Plivo's callbacks, signed (checked with
the SDK's validators), XML executed faithfully, ring outcomes, chaos."""

from __future__ import annotations

from typing import Any

import pytest
from plivo_support import AUTH_ID, SCALE, TOKEN, FakeWebhook, heard, make_settings

from voicecall.providers.base import CallUrls, PlaceRequest
from voicecall.providers.callee import Callee
from voicecall.providers.plivo import PlivoProvider
from voicecall.providers.plivo.emulator import Chaos, PlivoEmulator


async def place(emulator: PlivoEmulator, webhook: FakeWebhook, callee: Callee | None = None,
                to: str = "+15550001111") -> str:
    if callee is not None:
        emulator.set_callee(to, callee)
    p = PlivoProvider(make_settings(apiBaseUrl=emulator.base_url))
    try:
        uuid = await p.place(PlaceRequest(call_id="c1", from_number="+15550000000", to_number=to,
                                          urls=CallUrls(webhook.url, "c1"), ring_timeout_s=30))
    finally:
        await p.close()
    await emulator.wait_ended(uuid)
    assert webhook.bad_signatures == 0
    return uuid


def kinds(emulator: PlivoEmulator, uuid: str) -> list[str]:
    return [e.kind for e in emulator.log(uuid) if e.kind not in ("request", "rest")]


def ended(emulator: PlivoEmulator, uuid: str) -> dict[str, Any]:
    return next(e.detail for e in emulator.log(uuid) if e.kind == "ended")


async def test_conversation_turn(emulator: PlivoEmulator, webhook: FakeWebhook) -> None:
    webhook.replies["voice"] = (
        f'<Response><Speak voice="WOMAN">Hello there</Speak><GetInput action="{webhook.hook("gather", token="t1")}"'
        ' method="POST" inputType="speech" executionTimeout="5" redirect="true"><Speak>How can I help?</Speak>'
        f'</GetInput><Redirect method="POST">{webhook.hook("noinput", token="t1")}</Redirect></Response>')
    webhook.replies["gather"] = "<Response><Speak>Booked. Bye.</Speak><Hangup/></Response>"
    uuid = await place(emulator, webhook, Callee.from_script([{"answer": {"after": 1}}, {"say": "a table"}]))
    assert heard(emulator, uuid) == ["Hello there", "How can I help?", "Booked. Bye."]
    (ring,) = webhook.of("status")
    (answer,) = webhook.of("voice")
    (result,) = webhook.of("gather")
    assert ring["CallStatus"] == "ringing" and ring["RequestUUID"] == uuid
    assert answer["Event"] == "StartApp" and answer["CallStatus"] == "in-progress" and answer["To"] == "15550001111"
    assert (result["InputType"], result["Speech"], result["SpeechConfidenceScore"]) == ("speech", "a table", "0.92")
    (hangup,) = webhook.of("hangup")
    assert (hangup["CallStatus"], hangup["HangupCause"]) == ("completed", "NORMAL_CLEARING")
    assert hangup["CallUUID"] == answer["CallUUID"] != uuid and hangup["Duration"].isdigit()
    docs = [e.detail for e in emulator.log(uuid) if e.kind == "document"]
    assert docs[0] == {"source": "voice", "commands": webhook.replies["voice"]}
    assert kinds(emulator, uuid) == ["document", "heard", "gather", "heard", "said", "document", "heard",
                                     "hangup", "ended"]


async def test_no_input_falls_through_and_a_document_that_runs_out_hangs_up(
        emulator: PlivoEmulator, webhook: FakeWebhook) -> None:
    webhook.replies["voice"] = (
        f'<Response><GetInput action="{webhook.hook("gather")}" inputType="dtmf" executionTimeout="5">'
        f'<Speak>Press a key</Speak></GetInput><Redirect>{webhook.hook("noinput")}</Redirect></Response>')
    webhook.replies["noinput"] = "<Response><Speak>Nothing? Bye.</Speak></Response>"
    uuid = await place(emulator, webhook, Callee.from_script([{"silence": {}}]))
    assert webhook.of("gather") == [] and len(webhook.of("noinput")) == 1
    assert heard(emulator, uuid)[-1] == "Nothing? Bye."
    assert "gather-timeout" in kinds(emulator, uuid) and "document-ended" in kinds(emulator, uuid)
    assert webhook.of("hangup")[0]["CallStatus"] == "completed"


async def test_digits_finish_key_dtmf_and_redirect_false(emulator: PlivoEmulator, webhook: FakeWebhook) -> None:
    webhook.replies["voice"] = (
        f'<Response><DTMF>12w</DTMF><GetInput action="{webhook.hook("gather")}" inputType="dtmf speech" '
        'numDigits="3" redirect="false"/><Speak>Still here</Speak></Response>')
    uuid = await place(emulator, webhook, Callee.from_script([{"digits": "1234#"}]))
    (result,) = webhook.of("gather")
    assert (result["InputType"], result["Digits"]) == ("dtmf", "123")
    log = [(e.kind, e.detail) for e in emulator.log(uuid) if e.kind in ("dtmf", "pressed", "heard")]
    assert log == [("dtmf", "12w"), ("pressed", "123"), ("heard", "Still here")]


@pytest.mark.parametrize(("document", "error"), [
    ("<Response><Say>Twilio's verb</Say></Response>", "unknown element <Say>"),
    ("<Response><Speak>unclosed</Response>", "invalid XML"),
    ("<Document/>", "root element"),
    ('<Response><GetInput action="https://x.example/a" inputType="dtmf"><DTMF>1</DTMF></GetInput></Response>',
     "cannot be nested"),
    ("<Response><Dial><Number>15550001111</Number></Dial></Response>", "cannot hold elements"),
])
async def test_bad_documents_fail_the_call(emulator: PlivoEmulator, webhook: FakeWebhook, document: str,
                                           error: str) -> None:
    webhook.replies["voice"] = document
    uuid = await place(emulator, webhook)
    assert error in next(e.detail for e in emulator.log(uuid) if e.kind == "error")
    assert ended(emulator, uuid)["reason"] == "failed"
    assert webhook.of("hangup")[0]["CallStatus"] == "failed"
    assert heard(emulator, uuid) == []             # nothing of a bad document plays


@pytest.mark.parametrize(("ring", "status", "cause"), [
    ("busy", "busy", "USER_BUSY"), ("no-answer", "no-answer", "NO_ANSWER"), ("fail", "failed", "UNALLOCATED_NUMBER"),
])
async def test_ring_outcomes(emulator: PlivoEmulator, webhook: FakeWebhook, ring: str, status: str,
                             cause: str) -> None:
    await place(emulator, webhook, Callee(ring=ring))
    (hangup,) = webhook.of("hangup")
    assert (hangup["CallStatus"], hangup["HangupCause"], hangup["Duration"]) == (status, cause, "0")
    assert webhook.of("voice") == []


async def test_answer_after_the_ring_timeout_is_a_timeout(emulator: PlivoEmulator, webhook: FakeWebhook) -> None:
    uuid = await place(emulator, webhook, Callee(answer_after=45))
    assert webhook.of("hangup")[0]["CallStatus"] == "timeout" and ended(emulator, uuid)["reason"] == "timeout"


async def test_webhook_error_fails_the_call(emulator: PlivoEmulator, webhook: FakeWebhook) -> None:
    webhook.replies["voice"] = lambda form: 1 / 0  # type: ignore[assignment,return-value]
    uuid = await place(emulator, webhook)
    assert "answered HTTP 500" in next(e.detail for e in emulator.log(uuid) if e.kind == "error")


async def test_inbound_rejected_and_answered(emulator: PlivoEmulator, webhook: FakeWebhook) -> None:
    webhook.replies["voice"] = '<Response><Hangup reason="rejected"/></Response>'
    uuid = await emulator.dial_in("+14155550100", "+15550000000", webhook.url, Callee())
    await emulator.wait_ended(uuid)
    (first,) = webhook.of("voice")
    assert (first["Direction"], first["From"], first["To"], first["CallUUID"]) == (
        "inbound", "14155550100", "15550000000", uuid)
    assert webhook.of("hangup")[0]["HangupCause"] == "CALL_REJECTED"
    assert emulator.calls[uuid].answered_at is None

    webhook.replies["voice"] = "<Response><Speak>Welcome</Speak></Response>"
    uuid = await emulator.dial_in("+14155550100", "+15550000000", webhook.url, Callee())
    await emulator.wait_ended(uuid)
    assert emulator.calls[uuid].heard == ["Welcome"] and emulator.calls[uuid].answered_at is not None
    assert webhook.bad_signatures == 0


async def test_chaos_delivers_callbacks_twice_and_out_of_order(webhook: FakeWebhook) -> None:
    webhook.replies["voice"] = "<Response><Speak>Hi</Speak></Response>"
    emu = PlivoEmulator(AUTH_ID, TOKEN, time_scale=SCALE, chaos=Chaos(seed=1, duplicate=1.0, reorder=1.0))
    await emu.start()
    try:
        await place(emu, webhook)
    finally:
        await emu.stop()
    order = [kind for kind, _ in webhook.requests if kind in ("status", "hangup")]
    assert order == ["hangup", "hangup", "status", "status"]


async def test_rest_transfer_of_an_unanswered_call_is_refused(webhook: FakeWebhook) -> None:
    import aiohttp

    emu = PlivoEmulator(AUTH_ID, TOKEN, time_scale=SCALE, default_callee=Callee(answer_after=20))
    await emu.start()
    try:
        p = PlivoProvider(make_settings(apiBaseUrl=emu.base_url))
        request_uuid = await p.place(PlaceRequest(call_id="c1", from_number="+15550000000",
                                                  to_number="+15550001111", urls=CallUrls(webhook.url, "c1")))
        await p.close()
        call_uuid = emu.calls[request_uuid].call_uuid
        import base64

        auth = "Basic " + base64.b64encode(f"{AUTH_ID}:{TOKEN}".encode()).decode()
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{emu.base_url}/v1/Account/{AUTH_ID}/Call/{call_uuid}/",
                                 json={"legs": "aleg", "aleg_url": webhook.url},
                                 headers={"Authorization": auth}) as resp:
                assert resp.status == 400 and "not in progress" in (await resp.json())["error"]
            async with http.get(f"{emu.base_url}/v1/Account/{AUTH_ID}/Call/nope/",
                                headers={"Authorization": auth}) as resp:
                assert resp.status == 404 and set(await resp.json()) == {"api_id", "error"}
    finally:
        await emu.stop()
