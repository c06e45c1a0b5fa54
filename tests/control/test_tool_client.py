"""The voice_call tool (schema and callable, over a runtime and over the
control client) and the control client's distinct failures."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from conftest import Control

from voicecall.engine.client import AuthFailed, ControlClient, ControlTimeout, NotListening, RemoteError
from voicecall.engine.config import default_settings
from voicecall.engine.tool import ACTIONS, VOICE_CALL_TOOL, voice_call
from voicecall.providers.callee import Callee

TO = "+15550001111"


def test_tool_schema_is_openai_function_format_and_valid_json_schema() -> None:
    assert VOICE_CALL_TOOL["type"] == "function"
    fn = VOICE_CALL_TOOL["function"]
    assert fn["name"] == "voice_call" and fn["description"]
    schema = fn["parameters"]
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["action"]["enum"] == [
        "initiate_call", "continue_call", "speak_to_user", "send_dtmf", "end_call", "get_status"]
    assert set(schema["properties"]) == {"action", "message", "to", "mode", "dtmfSequence", "callId", "digits"}
    validator = jsonschema.Draft202012Validator(schema)
    assert validator.is_valid({"action": "send_dtmf", "callId": "c", "digits": "12#w"})
    assert not validator.is_valid({"action": "dial"})
    assert not validator.is_valid({"action": "get_status", "extra": 1})
    for action, (method, required, optional) in ACTIONS.items():
        assert method.startswith("voicecall.")
        assert set(required + optional) <= set(schema["properties"]), action


BAD_ARGS: list[tuple[dict[str, Any], str]] = [
    ({}, "'action' must be one of initiate_call, continue_call, speak_to_user, send_dtmf, end_call, get_status; "
         "got None"),
    ({"action": "dial"}, "'action' must be one of initiate_call, continue_call, speak_to_user, send_dtmf, "
                         "end_call, get_status; got 'dial'"),
    ({"action": "continue_call", "callId": "c"}, "continue_call needs 'message'"),
    ({"action": "send_dtmf", "callId": "c", "digits": 12}, "'digits' must be a string"),
    ({"action": "end_call", "callId": "c", "message": "bye"}, "end_call takes no 'message' (it takes callId)"),
    ({"action": "initiate_call", "message": "hi", "mode": "chat"}, "'mode' must be notify or conversation, got 'chat'"),
    ({"action": "speak_to_user", "callId": "", "message": "hi"}, "'callId' must not be empty"),
]


@pytest.mark.parametrize(("args", "message"), BAD_ARGS)
async def test_tool_bad_arguments_come_back_as_error(ctl: Control, args: dict[str, Any], message: str) -> None:
    assert await voice_call(ctl.rt, **args) == {"error": message}


async def test_tool_over_the_runtime(ctl: Control) -> None:
    quiet: list[Any] = [{"wait": 500}, "silence"]   # long silent gathers: each verb interrupts one
    ctl.rt.mock_carrier.set_callee(TO, Callee.from_script([{"answer": {"after": 1}}, *quiet, {"say": "yes"},
                                                           *quiet * 3]))
    placed = await voice_call(ctl.rt, action="initiate_call", message="Hello", to=TO, mode="conversation")
    call_id = placed["callId"]
    status = await voice_call(ctl.rt, action="get_status", callId=call_id)
    assert status["callId"] == call_id and status["terminal"] is False
    await ctl.gather_open(call_id)
    assert await voice_call(ctl.rt, action="continue_call", callId=call_id, message="Ready?") == {"transcript": "yes"}
    assert await voice_call(ctl.rt, action="speak_to_user", callId=call_id, message="Great") == {"ok": True}
    assert await voice_call(ctl.rt, action="send_dtmf", callId=call_id, digits="1") == {"ok": True}
    assert await voice_call(ctl.rt, action="end_call", callId=call_id) == {"ok": True}
    assert await voice_call(ctl.rt, action="get_status", callId="nope") == {"error": "no call nope"}
    assert await voice_call(ctl.rt, action="initiate_call", message="hi", to="555") == {
        "error": "'to' must be an E.164 number like +15550001234, got '555'"}


async def test_tool_never_raises_on_an_unexpected_failure(ctl: Control, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(call_id: str | None = None) -> dict[str, Any]:
        raise KeyError("boom")

    monkeypatch.setattr(ctl.rt, "status", broken)
    result = await voice_call(ctl.rt, action="get_status")
    assert result == {"error": "internal error (KeyError); see the voicecall log"}


async def test_tool_over_the_control_client(ctl: Control) -> None:
    client = ControlClient(ctl.rt.settings.replace(control={"port": ctl.rt.control_port}))
    assert await voice_call(client, action="get_status") == {"calls": []}
    ctl.rt.mock_carrier.set_callee(TO, Callee.from_script(["no-answer"]))
    placed = await voice_call(client, action="initiate_call", message="Hello", to=TO, mode="conversation")
    call_id = placed["callId"]
    assert list(ctl.rt.sessions) == [call_id]
    await ctl.until(lambda: ctl.rt.sessions[call_id].record.state == "ringing")
    assert await voice_call(client, action="speak_to_user", callId=call_id, message="hi") == {
        "error": f"call {call_id} is not connected yet (ringing)"}
    assert await voice_call(client, action="end_call", callId=call_id) == {"ok": True}
    assert await voice_call(client, action="end_call", callId="nope") == {"error": "no active call nope"}


# ------------------------------------------------------------------ client failures


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_client_nothing_listening(tmp_path: Path) -> None:
    client = ControlClient(default_settings().replace(store=tmp_path, control={"port": free_port()}))
    with pytest.raises(NotListening, match=r"nothing listens on the control listener at 127\.0\.0\.1:\d+$"):
        await client.call("voicecall.status")
    result = await voice_call(client, action="get_status")
    assert result["error"].endswith("; start `voicecall serve` first")


async def test_client_wrong_token(ctl: Control) -> None:
    settings = ctl.rt.settings.replace(control={"port": ctl.rt.control_port, "token": "not-the-token"})
    with pytest.raises(AuthFailed, match=r"refused our token \(HTTP 401\); use the token of the running "
                                         r"`voicecall serve` \(control.token in the config\)"):
        await ControlClient(settings).call("voicecall.status")


async def test_client_rpc_error_carries_code_and_slug(ctl: Control) -> None:
    client = ControlClient(ctl.rt.settings.replace(control={"port": ctl.rt.control_port}))
    with pytest.raises(RemoteError) as info:
        await client.call("voicecall.end", {"callId": "nope"})
    assert (info.value.rpc_code, info.value.code, str(info.value)) == (-32001, "call_not_found", "no active call nope")
    with pytest.raises(RemoteError) as info:
        await client.call("voicecall.nope")
    assert (info.value.rpc_code, info.value.code) == (-32601, "method_not_found")


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A listener that accepts and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_client_time_out(tmp_path: Path, silent_port: int) -> None:
    client = ControlClient(default_settings().replace(store=tmp_path, control={"port": silent_port}))
    with pytest.raises(ControlTimeout, match=r"no answer from the control listener at 127.0.0.1:\d+ within 0.2 s"):
        await client.call("voicecall.status", timeout=0.2)
