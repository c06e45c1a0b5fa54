"""The webhook endpoint's refusals, through the real server: each with its
status code, and the store checked for no change."""

from __future__ import annotations

import asyncio

import aiohttp

from voicecall.providers.callee import Callee


async def _live_call(rig) -> tuple[str, str]:
    rig.carrier.set_callee("+15550001111", Callee.from_script([{"answer": {"after": 1000}}]))
    call_id = await rig.runtime.initiate(to="+15550001111", message="hello", mode="notify")
    for _ in range(500):
        record = rig.runtime.sessions[call_id].record
        if record.state == "ringing" and record.provider_call_id and "call.ringing" in [
                e["type"] for e in await rig.events(call_id)]:        # committed, not just in memory
            return call_id, record.provider_call_id
        await asyncio.sleep(0.005)
    raise AssertionError("call never rang")


async def test_signed_request_is_processed_and_its_replay_has_no_side_effect(rig) -> None:
    call_id, sid = await _live_call(rig)
    body = {"sid": sid, "event": "answered", "seq": 50}
    before = len(await rig.events(call_id))
    status, _ = await rig.post(body, callId=call_id, type="status")
    assert status == 200
    assert rig.runtime.sessions[call_id].record.state == "answered"
    after_first = len(await rig.events(call_id))
    assert after_first == before + 1

    # The identical request again (same body, same timestamp, same signature).
    import json

    from voicecall.engine.security import mock_headers

    url = rig.url(callId=call_id, type="status")
    payload = json.dumps({"sid": sid, "event": "ringing", "seq": 51, "url": url}).encode()
    headers = {"Content-Type": "application/json", **mock_headers(rig.secret, payload, rig.runtime.clock.now())}
    async with aiohttp.ClientSession() as http:
        for _ in range(2):
            async with http.post(url, data=payload, headers=headers) as response:
                assert response.status == 200
    events = await rig.events(call_id)
    assert len(events) == after_first + 1          # the replay added nothing
    assert rig.runtime._webhook.counters["replay"] == 1


async def test_forged_missing_and_misdirected_requests_are_refused_without_side_effects(rig) -> None:
    call_id, sid = await _live_call(rig)
    before = await rig.events(call_id)
    body = {"sid": sid, "event": "answered", "seq": 60}
    cases = [
        (await rig.post(body, headers={"x-voicecall-signature": "0" * 64}, callId=call_id, type="status"), 401),
        (await rig.post(body, signed=False, callId=call_id, type="status"), 401),
        (await rig.post(body, method="GET", callId=call_id, type="status"), 405),
        (await rig.post(body, url=rig.runtime.public_url + "/", callId=call_id), 404),
        (await rig.post(body, url=rig.runtime.public_url.replace("/voice/webhook", "/voice/webhook/../x")), 404),
        (await rig.post(body, url=rig.runtime.public_url.replace("/voice/webhook", "/Voice/Webhook")), 404),
    ]
    assert [status for (status, _), _ in cases] == [expected for _, expected in cases]
    assert await rig.events(call_id) == before
    assert rig.runtime.sessions[call_id].record.state == "ringing"


async def test_oversized_body_is_refused_before_the_engine(rig) -> None:
    call_id, sid = await _live_call(rig)
    before = await rig.events(call_id)
    status, text = await rig.post({"sid": sid, "event": "answered", "seq": 70, "pad": "x" * 70_000},
                                  callId=call_id, type="status")
    assert (status, text.strip()) == (413, "body_too_large")
    assert await rig.events(call_id) == before


async def test_tampered_query_is_refused(rig) -> None:
    call_id, sid = await _live_call(rig)
    signed_for = rig.url(callId=call_id, type="status")
    status, _ = await rig.post({"sid": sid, "event": "answered", "seq": 80}, body_url=signed_for,
                               url=signed_for.replace("type=status", "type=gather"))
    assert status == 400
    assert rig.runtime.sessions[call_id].record.state == "ringing"


async def test_event_for_an_unknown_call_is_acknowledged_and_ignored(rig) -> None:
    status, _ = await rig.post({"sid": "MCunknown", "event": "answered", "seq": 1},
                               callId="00000000-0000-0000-0000-000000000000", type="status")
    assert status == 200
    assert await rig.runtime.store.live_calls() == []
