"""The control listener's HTTP and JSON-RPC surface: token, healthz, metrics,
protocol errors (-32700, -32600, -32601, -32602), batches, notifications."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Control, running
from prometheus_client.parser import text_string_to_metric_families

from voicecall.providers.callee import Callee

STATUS = {"jsonrpc": "2.0", "id": 1, "method": "voicecall.status", "params": {}}


# ------------------------------------------------------------------ token


@pytest.mark.parametrize("header", [None, "Bearer wrong-token", "Basic {token}", "Bearer", "{token}"])
async def test_rpc_without_the_right_bearer_token_is_401_before_json_rpc(ctl: Control, header: str | None) -> None:
    headers = {"Authorization": header.format(token=ctl.token)} if header else {}
    # The body is not even JSON: a 401 proves it was never read as JSON-RPC.
    async with ctl.http.post(ctl.base + "/rpc", data=b"{not json", headers=headers) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        doc = await resp.json()
    assert doc["error"] == "unauthorized"
    assert "Authorization: Bearer <token>" in doc["message"]


async def test_token_file_is_generated_once_with_mode_0600(tmp_path: Path) -> None:
    async with running(tmp_path) as first:
        token = first.token
    path = tmp_path / "control.token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(token) >= 40
    async with running(tmp_path) as second:
        assert second.token == token
        status, doc = await second.post(STATUS)
        assert status == 200 and "result" in doc


async def test_a_configured_token_wins_and_no_file_is_written(tmp_path: Path) -> None:
    async with running(tmp_path, control={"token": "configured-secret-1234"}) as c:
        assert c.token == "configured-secret-1234"
        assert (await c.post(STATUS))[0] == 200
        assert (await c.post(STATUS, token="configured-secret-123"))[0] == 401
    assert not (tmp_path / "control.token").exists()


async def test_a_token_file_readable_by_others_is_tightened(tmp_path: Path) -> None:
    tmp_path.joinpath("control.token").write_text("shared-token-value\n")
    os.chmod(tmp_path / "control.token", 0o644)
    async with running(tmp_path) as c:
        assert c.token == "shared-token-value"
        assert (await c.post(STATUS))[0] == 200
    assert stat.S_IMODE((tmp_path / "control.token").stat().st_mode) == 0o600


# ------------------------------------------------------------------ healthz, metrics


async def test_healthz_needs_no_token(ctl: Control) -> None:
    async with ctl.http.get(ctl.base + "/healthz") as resp:
        assert resp.status == 200
        assert await resp.json() == {"ok": True, "provider": "mock", "activeCalls": 0}


async def test_metrics_need_the_token_and_name_every_family(ctl: Control) -> None:
    async with ctl.http.get(ctl.base + "/metrics") as resp:
        assert resp.status == 401
    await ctl.error("voicecall.nope")
    async with ctl.http.get(ctl.base + "/metrics", headers={"Authorization": f"Bearer {ctl.token}"}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    for name in ("voicecall_calls", "voicecall_active_calls 0.0", "voicecall_webhooks_total",
                 "voicecall_webhook_signature_failures_total 0.0", "voicecall_turn_latency_seconds_bucket",
                 "voicecall_listen_wait_seconds_count",
                 'voicecall_rpc_requests_total{method="unknown",outcome="method_not_found"} 1.0'):
        assert name in text, name


async def scrape(ctl: Control) -> str:
    async with ctl.http.get(ctl.base + "/metrics", headers={"Authorization": f"Bearer {ctl.token}"}) as resp:
        return await resp.text()


async def test_metrics_count_webhooks_by_result_and_signature_failures(ctl: Control) -> None:
    url = f"http://127.0.0.1:{ctl.rt.webhook_port}/voice/webhook?type=status"
    headers = {"x-voicecall-timestamp": str(int(time.time())), "x-voicecall-signature": "0" * 64}
    async with ctl.http.post(url, data=b"{}", headers=headers) as resp:
        assert resp.status == 401
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(await scrape(ctl)) for s in family.samples}
    failures = samples[("voicecall_webhook_signature_failures_total", ())]
    assert failures >= 1
    assert samples[("voicecall_webhooks_total", (("result", "bad_signature"),))] == failures


async def test_turn_latency_histogram_observes_each_turn_once(ctl: Control) -> None:
    ctl.rt.mock_carrier.set_callee("+15550001111", Callee.from_script(["no-answer"]))
    call_id = (await ctl.result("voicecall.initiate", {"to": "+15550001111", "message": "hi",
                                                       "mode": "conversation"}))["callId"]
    record = ctl.rt.sessions[call_id].record
    # What the engine records when a turn's reply goes out (ARCHITECTURE "Call record": metrics).
    record.turn_count, record.metrics["lastTurnLatencyMs"], record.metrics["lastListenWaitMs"] = 1, 1500.0, 400.0
    for _ in range(2):
        text = await scrape(ctl)
        assert "voicecall_turn_latency_seconds_count 1.0" in text
        assert 'voicecall_turn_latency_seconds_bucket{le="1.0"} 0.0' in text
        assert 'voicecall_turn_latency_seconds_bucket{le="1.5"} 1.0' in text
        assert 'voicecall_listen_wait_seconds_bucket{le="0.5"} 1.0' in text
        assert 'voicecall_calls{state="ringing"} 1.0' in text or 'voicecall_calls{state="initiated"} 1.0' in text
    record.turn_count += 1      # the next caller turn: counted, its reply not out yet
    assert "voicecall_turn_latency_seconds_count 1.0" in await scrape(ctl)
    record.metrics["lastTurnLatencyMs"], record.metrics["lastListenWaitMs"] = 700.0, None
    text = await scrape(ctl)
    assert "voicecall_turn_latency_seconds_count 2.0" in text
    assert 'voicecall_turn_latency_seconds_bucket{le="0.75"} 1.0' in text
    assert "voicecall_listen_wait_seconds_count 1.0" in text
    await ctl.result("voicecall.end", {"callId": call_id})


# ------------------------------------------------------------------ protocol errors


async def test_parse_error(ctl: Control) -> None:
    for raw in (b"{not json", b"\xff\xfe\x00garbage"):
        status, doc = await ctl.post(None, raw=raw)
        assert status == 200
        assert doc["id"] is None
        assert doc["error"]["code"] == -32700
        assert doc["error"]["message"].startswith("parse error: the body is not JSON")
        assert doc["error"]["data"] == {"reason": "parse_error"}


INVALID: list[tuple[Any, str]] = [
    ([], "invalid request: empty batch"),
    (42, "invalid request: expected a JSON object"),
    ({"jsonrpc": "1.0", "id": 1, "method": "voicecall.status"}, 'invalid request: "jsonrpc" must be "2.0"'),
    ({"id": 1, "method": "voicecall.status"}, 'invalid request: "jsonrpc" must be "2.0"'),
    ({"jsonrpc": "2.0", "id": 1}, 'invalid request: "method" must be a string'),
    ({"jsonrpc": "2.0", "id": 1, "method": 5}, 'invalid request: "method" must be a string'),
    ({"jsonrpc": "2.0", "id": True, "method": "voicecall.status"},
     "invalid request: id must be a string, an integer or null"),
    ({"jsonrpc": "2.0", "id": 1, "method": "voicecall.status", "params": "x"},
     'invalid request: "params" must be an object'),
    ({"jsonrpc": "2.0", "id": 1, "method": "voicecall.status", "extra": 1}, "invalid request: unknown member(s) extra"),
    ([{}] * 33, "invalid request: a batch holds at most 32 requests"),
]


@pytest.mark.parametrize(("body", "message"), INVALID)
async def test_invalid_request(ctl: Control, body: Any, message: str) -> None:
    status, doc = await ctl.post(body)
    assert status == 200
    assert doc["error"] == {"code": -32600, "message": message, "data": {"reason": "invalid_request"}}


async def test_unknown_method_suggests_the_closest(ctl: Control) -> None:
    error = await ctl.error("voicecall.stat")
    assert error["code"] == -32601
    assert error["message"].startswith("unknown method 'voicecall.stat' (did you mean 'voicecall.start'?); "
                                       "methods: voicecall.initiate, voicecall.start, voicecall.continue, ")
    assert error["data"] == {"reason": "method_not_found"}


INVALID_PARAMS: list[tuple[str, Any, str]] = [
    ("voicecall.status", {"callid": "x"},
     "invalid params for voicecall.status: unknown param 'callid' (did you mean 'callId'?)"),
    ("voicecall.speak", {"callId": "x"}, "invalid params for voicecall.speak: 'message' is required"),
    ("voicecall.speak", {"callId": 5, "message": "hi"},
     "invalid params for voicecall.speak: 'callId' must be a string, got int"),
    ("voicecall.dtmf", {"callId": "", "digits": ""},
     "invalid params for voicecall.dtmf: 'callId' must not be empty; 'digits' must not be empty"),
    ("voicecall.initiate", {"to": "+15550001111", "message": "hi", "vars": []},
     "invalid params for voicecall.initiate: 'vars' must be an object, got list"),
    ("voicecall.initiate", ["+15550001111", "hi"],
     "params of voicecall.initiate must be an object of named params, not an array"),
    ("voicecall.initiate", {"to": "+15550001111"}, "invalid params for voicecall.initiate: 'message' is required"),
    ("voicecall.start", {"message": "hi"}, "invalid params for voicecall.start: 'to' is required"),
    ("voicecall.initiate", {"to": "12345", "message": "hi"},
     "'to' must be an E.164 number like +15550001234, got '12345'"),
    ("voicecall.initiate", {"message": "hi"}, "no 'to' number given and no toNumber configured"),
    ("voicecall.initiate", {"to": "+15550001111", "message": "hi", "mode": "chat"},
     "unknown mode 'chat': use notify or conversation"),
    ("voicecall.start", {"to": "+15550001111", "mode": "notify"}, "a notify call needs a message"),
    ("voicecall.start", {"to": "+15550001111", "message": "hi", "mode": "notify", "dtmfSequence": "12"},
     "dtmfSequence works with conversation calls; use dtmf on the live call"),
    ("voicecall.continue.result", {"operationId": "nope"},
     "unknown operationId 'nope' (results are kept 600 s after the turn ends)"),
]


@pytest.mark.parametrize(("method", "params", "message"), INVALID_PARAMS)
async def test_invalid_params(ctl: Control, method: str, params: Any, message: str) -> None:
    error = await ctl.error(method, params)
    assert error["code"] == -32602
    assert error["message"] == message
    assert error["data"]["reason"] == "invalid_params"
    assert ctl.rt.sessions == {}


async def test_bad_digits_on_a_live_call_are_invalid_params(ctl: Control) -> None:
    call_id = (await ctl.result("voicecall.start", {"to": "+15550001111", "mode": "conversation"}))["callId"]
    error = await ctl.error("voicecall.dtmf", {"callId": call_id, "digits": "12a"})
    assert error == {"code": -32602, "message": "digits may hold only 0-9, *, # and w (half-second wait)",
                     "data": {"reason": "invalid_params"}}
    await ctl.result("voicecall.end", {"callId": call_id})


async def test_body_over_64_kib_is_refused(ctl: Control) -> None:
    status, doc = await ctl.post(None, raw=b"[" + b" " * 70_000 + b"]")
    assert status == 413
    assert doc["error"] == "body_too_large"


async def test_batch_answers_in_order_and_skips_notifications(ctl: Control) -> None:
    batch = [STATUS, {"jsonrpc": "2.0", "id": "b", "method": "voicecall.nope"},
             {"jsonrpc": "2.0", "method": "voicecall.status"}]
    status, doc = await ctl.post(batch)
    assert status == 200
    assert [d["id"] for d in doc] == [1, "b"]
    assert doc[0]["result"] == {"calls": []}
    assert doc[1]["error"]["code"] == -32601


async def test_notifications_get_no_body(ctl: Control) -> None:
    for body in ({"jsonrpc": "2.0", "method": "voicecall.status"},
                 [{"jsonrpc": "2.0", "method": "voicecall.status"}, {"jsonrpc": "2.0", "method": "voicecall.x"}]):
        status, doc = await ctl.post(body)
        assert (status, doc) == (204, None)


async def test_unexpected_exception_is_a_generic_internal_error(ctl: Control, monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    async def broken(call_id: str | None = None) -> dict[str, Any]:
        raise RuntimeError("secret detail from deep inside")

    monkeypatch.setattr(ctl.rt, "status", broken)
    error = await ctl.error("voicecall.status", {})
    assert error == {"code": -32603, "message": "internal error; the serve log has the details",
                     "data": {"reason": "internal_error"}}
    assert "secret detail from deep inside" in caplog.text     # logged with its traceback, not sent
    monkeypatch.undo()
    assert await ctl.result("voicecall.status", {}) == {"calls": []}


async def test_get_on_rpc_is_method_not_allowed(ctl: Control) -> None:
    async with ctl.http.get(ctl.base + "/rpc", headers={"Authorization": f"Bearer {ctl.token}"}) as resp:
        assert resp.status == 405
