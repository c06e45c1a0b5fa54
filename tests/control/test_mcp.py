"""``voicecall mcp`` driven by the official MCP SDK's own stdio client,
forwarding to a runtime's control listener."""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from conftest import Control
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from voicecall.engine.tool import TOOL_PARAMETERS
from voicecall.providers.callee import Callee

VOICECALL = str(Path(sys.executable).with_name("voicecall"))
TO = "+15550001111"


@asynccontextmanager
async def mcp_session(config: Path) -> AsyncIterator[ClientSession]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICECALL_")}
    params = StdioServerParameters(command=VOICECALL, args=["mcp", "--config", str(config)], env=env)
    with open(os.devnull, "w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield session


def config_for(ctl: Control, tmp_path: Path, serve_port: int = 0, **control: Any) -> Path:
    path = tmp_path / "voicecall.json"
    path.write_text(json.dumps({"provider": "mock", "store": str(ctl.rt.settings.store_dir),
                                "serve": {"port": serve_port}, "control": {"port": ctl.rt.control_port, **control}}))
    return path


async def call(session: ClientSession, **args: Any) -> tuple[dict[str, Any], bool]:
    result = await session.call_tool("voice_call", args)
    text = result.content[0]
    assert text.type == "text"
    payload = json.loads(text.text)
    assert result.structured_content == payload
    return payload, bool(result.is_error)


async def test_mcp_lists_one_tool_and_places_a_call(ctl: Control, tmp_path: Path) -> None:
    ctl.rt.mock_carrier.set_callee(TO, Callee.from_script(["no-answer"]))
    async with mcp_session(config_for(ctl, tmp_path)) as session:
        tools = (await session.list_tools()).tools
        assert [t.name for t in tools] == ["voice_call"]
        assert tools[0].input_schema == TOOL_PARAMETERS
        assert await call(session, action="get_status") == ({"calls": []}, False)
        placed, is_error = await call(session, action="initiate_call", message="Hello", to=TO, mode="conversation")
        assert not is_error and list(ctl.rt.sessions) == [placed["callId"]]
        status, _ = await call(session, action="get_status", callId=placed["callId"])
        assert status["callId"] == placed["callId"] and status["to"] == TO
        assert await call(session, action="end_call", callId=placed["callId"]) == ({"ok": True}, False)
        assert await call(session, action="end_call", callId="nope") == ({"error": "no active call nope"}, True)
        assert await call(session, action="dial") == ({"error": "'action' must be one of initiate_call, "
                                                       "continue_call, speak_to_user, send_dtmf, end_call, "
                                                       "get_status; got 'dial'"}, True)


async def test_mcp_reports_a_wrong_token_as_a_tool_error_and_never_binds_the_webhook_port(
        ctl: Control, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        webhook_port = probe.getsockname()[1]
    async with mcp_session(config_for(ctl, tmp_path, webhook_port, token="not-the-token")) as session:
        payload, is_error = await call(session, action="get_status")
        with socket.socket() as probe:   # still free while the MCP server runs
            probe.bind(("127.0.0.1", webhook_port))
    assert is_error
    assert "refused our token (HTTP 401)" in payload["error"]
