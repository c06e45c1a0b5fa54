"""The Call Control client against the emulator: bodies on the wire, Telnyx's
errors, retries with the same command_id, what counts as "already gone"."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from telnyx_support import API_KEY, FakeWebhook, make_settings

from voicecall.engine.clock import ScaledClock
from voicecall.engine.errors import ProviderError
from voicecall.engine.program import Program, Step
from voicecall.providers.base import CallRef, CallUrls, PlaceRequest
from voicecall.providers.callee import Callee
from voicecall.providers.telnyx import TelnyxProvider
from voicecall.providers.telnyx.emulator import TelnyxEmulator
from voicecall.providers.telnyx.parse import decode_state

TO = "+15550002000"


@pytest.fixture
async def fast(emulator: TelnyxEmulator, tmp_path: Path) -> AsyncIterator[TelnyxProvider]:
    """A provider whose retry back-off runs on a fast clock."""
    prov = TelnyxProvider(make_settings(emulator.public_key_b64, emulator.base_url), store_dir=tmp_path,
                          clock=ScaledClock(0.01))
    yield prov
    await prov.close()


def commands(emulator: TelnyxEmulator, ccid: str, name: str | None = None) -> list[dict[str, Any]]:
    return [e.detail["body"] for e in emulator.log(ccid)
            if e.kind == "command" and (name is None or e.detail["name"] == name)]


async def answered_call(emulator: TelnyxEmulator, provider: TelnyxProvider, webhook: FakeWebhook,
                        script: list[Any] | None = None) -> tuple[CallRef, CallUrls]:
    emulator.set_callee(TO, Callee.from_script(script or [{"answer": {"after": 1}}]))
    urls = CallUrls(webhook.url, "call-1")
    ccid = await provider.place(PlaceRequest("call-1", "", TO, urls))
    await webhook.next("call.answered")
    return CallRef("call-1", ccid), urls


async def test_dial_sends_telnyx_fields_and_clamps_the_ring_timeout(
        emulator: TelnyxEmulator, provider: TelnyxProvider, webhook: FakeWebhook,
        caplog: pytest.LogCaptureFixture) -> None:
    urls = CallUrls(webhook.url, "call-1")
    with caplog.at_level(logging.WARNING, "voicecall.providers.telnyx"):
        ccid = await provider.place(PlaceRequest("call-1", "", TO, urls, ring_timeout_s=2, time_limit_s=99999,
                                                 machine_detection=True))
    assert ccid.startswith("v3:")
    (body,) = commands(emulator, ccid, "dial")
    assert body["connection_id"] == "1234567890" and body["to"] == TO and body["from"] == "+15550001000"
    assert body["webhook_url"] == urls.webhook("event") and body["webhook_url_method"] == "POST"
    assert decode_state(body["client_state"]) == {"c": "call-1", "k": "a"}
    assert (body["timeout_secs"], body["time_limit_secs"]) == (5, 14400)
    assert body["answering_machine_detection"] == "detect" and body["command_id"]
    assert "outside Telnyx's range 5..600" in caplog.text and "range 30..14400" in caplog.text
    assert (await webhook.next("machine.detected")).data == {"answeredBy": "human"}


async def test_every_command_carries_a_unique_command_id(emulator: TelnyxEmulator, provider: TelnyxProvider,
                                                         webhook: FakeWebhook) -> None:
    ref, urls = await answered_call(emulator, provider, webhook)
    await provider.execute(ref, Step("dtmf", {"digits": "1w2"}), urls, "t1")
    await provider.execute(ref, Step("say", {"text": "one two"}), urls, "t2")
    await webhook.next("playback.done")
    ids = [b["command_id"] for b in commands(emulator, ref.provider_call_id or "")]
    assert len(ids) == len(set(ids)) == 3
    assert [e.detail for e in emulator.log(ref.provider_call_id or "") if e.kind == "dtmf"] == ["1w2"]


async def test_wrong_api_key_names_telnyx_code_and_title(emulator: TelnyxEmulator, tmp_path: Path) -> None:
    settings = make_settings(emulator.public_key_b64, emulator.base_url)
    bad = TelnyxProvider(settings.replace(telnyx={"apiKey": "wrong"}), store_dir=tmp_path)
    try:
        with pytest.raises(ProviderError, match=r"Telnyx error 10009 \(Authentication failed\): Could not") as info:
            await bad.place(PlaceRequest("c", "", TO, CallUrls("http://127.0.0.1:9/h", "c")))
    finally:
        await bad.close()
    assert (info.value.status, info.value.carrier_code, info.value.retryable) == (401, "10009", False)


async def test_invalid_dial_is_refused_with_the_field(provider: TelnyxProvider, webhook: FakeWebhook) -> None:
    with pytest.raises(ProviderError, match=r"Telnyx error 10015 \(Invalid parameter\): The 'to' parameter") as info:
        await provider.place(PlaceRequest("c", "", "5550002000", CallUrls(webhook.url, "c")))
    assert info.value.status == 422


async def test_speak_before_answer_is_refused_as_telnyx_would(emulator: TelnyxEmulator, provider: TelnyxProvider,
                                                              webhook: FakeWebhook) -> None:
    ccid = await emulator.dial_in("+15550003000", "+15550001000", webhook.url, Callee())
    await webhook.next("call.initiated")
    with pytest.raises(ProviderError, match=r"Call not answered yet") as info:
        await provider.execute(CallRef("c", ccid), Step("say", {"text": "too early"}), CallUrls(webhook.url, "c"), "t")
    assert info.value.status == 422
    assert emulator.calls[ccid].heard == []


async def test_answering_an_outgoing_call_is_refused(emulator: TelnyxEmulator, provider: TelnyxProvider,
                                                     webhook: FakeWebhook) -> None:
    ref, urls = await answered_call(emulator, provider, webhook)
    with pytest.raises(ProviderError, match="incoming calls only") as info:
        await provider.answer(ref, urls)
    assert info.value.status == 422


async def test_a_lost_reply_is_retried_with_the_same_command_id_and_runs_once(
        emulator: TelnyxEmulator, fast: TelnyxProvider, webhook: FakeWebhook) -> None:
    ref, urls = await answered_call(emulator, fast, webhook)
    ccid = ref.provider_call_id or ""
    emulator.fail_next(1, 503, executed=True)          # Telnyx ran it; the 200 never arrived
    await fast.execute(ref, Step("say", {"text": "only once"}), urls, "t1")
    assert (await webhook.next("playback.done")).token == "t1"
    sent = [r["command_id"] for r in emulator.requests if r["path"].endswith("/actions/speak")]
    assert len(sent) == 2 and sent[0] == sent[1]
    assert len(commands(emulator, ccid, "speak")) == 1 and emulator.calls[ccid].heard == ["only once"]


async def test_a_5xx_before_running_is_retried_then_runs(emulator: TelnyxEmulator, fast: TelnyxProvider,
                                                         webhook: FakeWebhook) -> None:
    ref, urls = await answered_call(emulator, fast, webhook)
    emulator.fail_next(2, 500)
    await fast.execute(ref, Step("hangup", {}), urls, "t")
    sent = [r["command_id"] for r in emulator.requests if r["path"].endswith("/actions/hangup")]
    assert len(sent) == 3 and len(set(sent)) == 1
    assert (await webhook.next("call.ended")).data["reason"] == "completed"


async def test_persistent_5xx_gives_up_after_three_tries(emulator: TelnyxEmulator, fast: TelnyxProvider,
                                                         webhook: FakeWebhook) -> None:
    ref, urls = await answered_call(emulator, fast, webhook)
    emulator.fail_next(3, 500)
    with pytest.raises(ProviderError, match=r"Telnyx error 10007 \(Unexpected error\)") as info:
        await fast.execute(ref, Step("say", {"text": "x"}), urls, "t")
    assert info.value.retryable and info.value.status == 500
    assert len([r for r in emulator.requests if r["path"].endswith("/actions/speak")]) == 3


async def test_dial_is_never_retried(emulator: TelnyxEmulator, fast: TelnyxProvider, webhook: FakeWebhook) -> None:
    emulator.fail_next(1, 502)
    with pytest.raises(ProviderError, match=r"Telnyx error 10007 \(Unexpected error\)"):
        await fast.place(PlaceRequest("c", "", TO, CallUrls(webhook.url, "c")))
    assert [r["path"] for r in emulator.requests] == ["/v2/calls"] and emulator.calls == {}


async def test_hangup_of_a_gone_or_unknown_call_is_false(emulator: TelnyxEmulator, provider: TelnyxProvider,
                                                         webhook: FakeWebhook) -> None:
    assert await provider.hangup(CallRef("c", None)) is False
    assert await provider.hangup(CallRef("c", "v3:never-existed")) is False
    ref, urls = await answered_call(emulator, provider, webhook, [{"answer": {"after": 1}}, {"hangup": {}}])
    await provider.execute(ref, Step("gather", {"input": "dtmf", "token": "T", "timeout": 5}), urls, "t")
    assert (await webhook.next("call.ended")).data["reason"] == "completed"
    assert await provider.hangup(ref) is False
    # A step racing the caller's hang-up is dropped quietly: call.hangup is already on its way.
    await provider.execute(ref, Step("say", {"text": "hello?"}), urls, "t")
    errors = [e.detail for e in emulator.log(ref.provider_call_id or "") if e.kind == "error"]
    assert errors[-1] == ("speak refused: Call has already ended: This call is no longer active and "
                          "can't receive commands.")


async def test_push_and_missing_settings_are_clear_errors(provider: TelnyxProvider, tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match="command carrier"):
        await provider.push(CallRef("c", "v3:x"), Program("s", ()), CallUrls("https://h/w", "c"))
    with pytest.raises(ProviderError, match="no Telnyx call_control_id"):
        await provider.execute(CallRef("c", None), Step("hangup", {}), CallUrls("https://h/w", "c"), "t")
    bare = TelnyxProvider(make_settings("k").replace(fromNumber=None, telnyx={"connectionId": ""}),
                          store_dir=tmp_path)
    with pytest.raises(ProviderError, match="fromNumber is required"):
        await bare.place(PlaceRequest("c", "", TO, CallUrls("https://h/w", "c")))
    with pytest.raises(ProviderError, match="connectionId is required"):
        await bare.place(PlaceRequest("c", "+15550001000", TO, CallUrls("https://h/w", "c")))
    await bare.close()
    assert API_KEY
