"""The operational verbs as a user runs them: ``.venv/bin/voicecall`` in a
subprocess, against a runtime whose control listener runs in the test's own
event loop (or against nothing, for the fallbacks)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from conftest import Control, running

from voicecall.engine.store import StoreReader
from voicecall.providers.callee import Callee

VOICECALL = str(Path(sys.executable).with_name("voicecall"))
TO = "+15550001111"


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)


def write_config(path: Path, store: Path, port: int, **extra: Any) -> Path:
    doc = {"provider": "mock", "store": str(store), "control": {"port": port, **extra.pop("control", {})},
           "serve": {"port": 0}, "outbound": {"notifyHangupDelaySec": 0}, **extra}
    path.write_text(json.dumps(doc))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def voicecall(*args: str, timeout: float = 30) -> Run:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICECALL_")}
    proc = await asyncio.create_subprocess_exec(VOICECALL, *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


def config_for(ctl: Control, tmp_path: Path, **extra: Any) -> str:
    return str(write_config(tmp_path / "voicecall.json", ctl.rt.settings.store_dir, ctl.rt.control_port or 0,
                            **extra))


async def test_verbs_delegate_to_the_running_runtime(ctl: Control, tmp_path: Path) -> None:
    cfg = config_for(ctl, tmp_path)
    # Each silent gather lasts long enough (500 s, 5 s real) for the next subprocess to start;
    # every verb's new document interrupts it and opens the next gather.
    quiet: list[Any] = [{"wait": 500}, "silence"]
    script = [{"answer": {"after": 1}}, *quiet, {"say": "yes"}, *quiet * 4]
    ctl.rt.mock_carrier.set_callee(TO, Callee.from_script(script))
    run = await voicecall("call", "-m", "Hello", "-t", TO, "--mode", "conversation", "--config", cfg)
    assert run.code == 0, run.err
    call_id = run.out.strip()
    assert run.out == call_id + "\n" and uuid.UUID(call_id)
    assert list(ctl.rt.sessions) == [call_id]
    await ctl.gather_open(call_id)
    run = await voicecall("continue", "--call-id", call_id, "--message", "Ready?", "--json", "--config", cfg)
    assert (run.code, run.json) == (0, {"transcript": "yes"}), run.err
    run = await voicecall("speak", "--call-id", call_id, "--message", "Great", "--config", cfg)
    assert (run.code, run.out) == (0, "ok\n"), run.err
    run = await voicecall("dtmf", "--call-id", call_id, "--digits", "1#", "--json", "--config", cfg)
    assert (run.code, run.json) == (0, {"ok": True}), run.err
    run = await voicecall("end", "--call-id", call_id, "--json", "--config", cfg)
    assert (run.code, run.json) == (0, {"ok": True}), run.err
    record = await ctl.rt.wait_ended(call_id, timeout=5)
    assert record.state == "hangup-bot"
    said = [(t.role, t.text) for t in record.transcript]
    assert ("bot", "Ready?") in said and ("bot", "Great") in said and ("caller", "yes") in said


async def test_start_json_and_vars(ctl: Control, tmp_path: Path) -> None:
    cfg = config_for(ctl, tmp_path)
    ctl.rt.mock_carrier.set_callee(TO, Callee.from_script(["no-answer"]))
    run = await voicecall("start", "--to", TO, "--mode", "conversation", "--json", "--config", cfg)
    assert run.code == 0, run.err
    call_id = run.json["callId"]
    assert run.out.count("\n") == 1 and list(ctl.rt.sessions) == [call_id]
    await ctl.result("voicecall.end", {"callId": call_id})
    # A flow's vars are checked by the runtime: conversation's silences is an integer.
    run = await voicecall("call", "-m", "Hi", "-t", TO, "--mode", "conversation", "--var", "silences=x",
                          "--json", "--config", cfg)
    assert run.code == 1
    assert run.json["error"]["code"] == "invalid_params"
    assert run.json["error"]["message"].startswith("invalid vars: ")


async def test_rpc_errors_exit_1_with_one_line_or_one_json_document(ctl: Control, tmp_path: Path) -> None:
    cfg = config_for(ctl, tmp_path)
    run = await voicecall("end", "--call-id", "nope", "--config", cfg)
    assert (run.code, run.out, run.err) == (1, "", "Error: no active call nope\n")
    run = await voicecall("end", "--call-id", "nope", "--json", "--config", cfg)
    assert run.code == 1
    assert run.json == {"error": {"code": "call_not_found", "message": "no active call nope"}}
    run = await voicecall("call", "-m", "Hi", "-t", "12345", "--json", "--config", cfg)
    assert run.code == 1
    assert run.json == {"error": {"code": "invalid_params",
                                  "message": "'to' must be an E.164 number like +15550001234, got '12345'"}}


async def test_wrong_token_exits_1_with_advice_and_never_falls_back(ctl: Control, tmp_path: Path) -> None:
    cfg = config_for(ctl, tmp_path, control={"token": "not-the-serve-token"})
    for args in (("call", "-m", "Hi", "-t", TO), ("end", "--call-id", "x"), ("speak", "--call-id", "x", "-m", "hi")):
        run = await voicecall(*args, "--config", cfg)
        assert run.code == 1, args
        assert run.err.startswith("Error: the control listener at 127.0.0.1:")
        assert "refused our token (HTTP 401); use the token of the running `voicecall serve` " \
               "(control.token in the config)" in run.err
    assert ctl.rt.sessions == {}


async def test_live_verbs_need_serve_when_nothing_listens(tmp_path: Path) -> None:
    port = free_port()
    cfg = str(write_config(tmp_path / "c.json", tmp_path / "store", port))
    for args, verb in ((("continue", "--call-id", "c1", "-m", "hi"), "continue"),
                       (("speak", "--call-id", "c1", "-m", "hi"), "speak"),
                       (("dtmf", "--call-id", "c1", "--digits", "1"), "dtmf")):
        run = await voicecall(*args, "--config", cfg)
        assert run.code == 1
        assert run.err == (f"Error: nothing listens on the control listener at 127.0.0.1:{port}: "
                           f"`voicecall serve` must run for `{verb}` (it needs the live call's runtime)\n")
    run = await voicecall("speak", "--call-id", "c1", "-m", "hi", "--json", "--config", cfg)
    assert run.json["error"]["code"] == "serve_not_running"


async def test_call_runs_standalone_until_the_call_ends(tmp_path: Path) -> None:
    store = tmp_path / "store"
    cfg = str(write_config(tmp_path / "c.json", store, free_port()))
    run = await voicecall("call", "-m", "Standalone hello", "-t", TO, "--config", cfg)
    assert run.code == 0, run.err
    call_id = run.out.strip()
    assert run.out == call_id + "\n" and uuid.UUID(call_id)
    assert f"call {call_id} ended: hangup-bot" in run.err
    record = StoreReader(store).get(call_id)
    assert record is not None and record.terminal and record.end_reason == "hangup-bot"
    assert [t.text for t in record.transcript if t.role == "bot"] == ["Standalone hello"]
    # end falls back to the carrier's REST API through a runtime without a webhook listener.
    run = await voicecall("end", "--call-id", call_id, "--json", "--config", cfg)
    assert run.code == 1
    assert run.json == {"error": {"code": "call_ended", "message": f"call {call_id} already ended (hangup-bot)"}}


async def test_call_fallback_names_a_runtime_already_holding_the_store(ctl: Control, tmp_path: Path) -> None:
    # A serve runs on this store, but the config points at a control port nobody listens on.
    cfg = str(write_config(tmp_path / "c.json", ctl.rt.settings.store_dir, free_port()))
    run = await voicecall("call", "-m", "Hi", "-t", TO, "--json", "--config", cfg)
    assert run.code == 1
    assert run.json["error"]["code"] == "store_locked"
    assert f"pid {os.getpid()}" in run.json["error"]["message"]
    assert ctl.rt.sessions == {}


async def test_usage_errors_exit_2(tmp_path: Path) -> None:
    cfg = str(write_config(tmp_path / "c.json", tmp_path / "store", free_port()))
    for args in (("call", "-t", TO), ("call", "-m", "hi", "--var", "novalue"), ("call", "-m", "hi", "--mode", "x"),
                 ("continue", "--call-id", "c1"), ("dtmf", "--call-id", "c1")):
        run = await voicecall(*args, "--config", cfg)
        assert run.code == 2, (args, run.err)
        assert "Error" in run.err


async def test_a_broken_config_exits_1_listing_the_problem(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.json"
    cfg.write_text(json.dumps({"provider": "mock", "maxConcurrentCalls": 0}))
    run = await voicecall("speak", "--call-id", "c1", "-m", "hi", "--config", str(cfg))
    assert run.code == 1
    assert "$.maxConcurrentCalls" in run.err and run.err.rstrip().splitlines()[-1].startswith("Error: ")


async def test_delegation_through_a_real_serve(tmp_path: Path) -> None:
    """The same verbs against ``voicecall serve`` itself (real clock, mock carrier)."""
    port = free_port()
    cfg = str(write_config(tmp_path / "c.json", tmp_path / "store", port))
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICECALL_")}
    log = (tmp_path / "serve.log").open("wb")
    serve = await asyncio.create_subprocess_exec(VOICECALL, "serve", "--config", cfg, env=env,
                                                 stderr=log, stdout=asyncio.subprocess.DEVNULL)
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 20
            while True:   # ready when the control listener answers /healthz
                assert serve.returncode is None, (tmp_path / "serve.log").read_text()
                assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                        if resp.status == 200:
                            break
                await asyncio.sleep(0.05)
        run = await voicecall("call", "-m", "Hi", "-t", TO, "--mode", "conversation", "--json", "--config", cfg)
        assert run.code == 0, run.err
        call_id = run.json["callId"]
        run = await voicecall("end", "--call-id", call_id, "--config", cfg)
        assert (run.code, run.out) == (0, "ok\n"), run.err
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 10
            while True:   # the carrier confirms the hang-up: no live call left
                assert time.monotonic() < deadline
                async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                    if (await resp.json())["activeCalls"] == 0:
                        break
                await asyncio.sleep(0.05)
    finally:
        serve.terminate()
        await asyncio.wait_for(serve.wait(), 20)
        log.close()
    record = StoreReader(tmp_path / "store").get(call_id)
    assert record is not None and (record.terminal, record.end_reason) == (True, "hangup-bot")


async def test_end_hangs_up_a_stored_live_call_when_nothing_listens(tmp_path: Path) -> None:
    store = tmp_path / "store"
    async with running(store) as ctl:
        ctl.rt.mock_carrier.set_callee(TO, Callee.from_script(["no-answer"]))
        call_id = (await ctl.result("voicecall.start", {"to": TO, "mode": "conversation"}))["callId"]
        await ctl.until(lambda: ctl.rt.sessions[call_id].record.state == "ringing")
    before = StoreReader(store).get(call_id)
    assert before is not None and not before.terminal     # serve stopped; the call is kept live
    cfg = str(write_config(tmp_path / "c.json", store, free_port()))
    run = await voicecall("end", "--call-id", call_id, "--json", "--config", cfg)
    after = StoreReader(store).get(call_id)
    assert after is not None and after.terminal
    # The restored runtime also asks the carrier about the call in the background;
    # a fresh mock carrier does not know it, so that check may end it first.
    if after.end_reason == "hangup-bot":
        assert (run.code, run.json) == (0, {"ok": True}), run.err
    else:
        assert after.end_reason == "completed"
        assert (run.code, run.json) in ((0, {"ok": True}), (1, {"error": {
            "code": "call_ended", "message": f"call {call_id} already ended (completed)"}})), run.err


async def test_standalone_end_of_an_unknown_call(tmp_path: Path) -> None:
    cfg = str(write_config(tmp_path / "c.json", tmp_path / "store", free_port()))
    run = await voicecall("end", "--call-id", "nope", "--config", cfg)
    assert (run.code, run.err) == (1, "Error: no active call nope\n")


