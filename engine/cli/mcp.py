"""``voicecall mcp``: the ``voice_call`` tool as an MCP server on stdio
(DESIGN §6, §8), built on the official ``mcp`` SDK.

It exposes one tool, ``voice_call``, with the function-calling schema, and
forwards every call to a running ``voicecall serve`` over the control
listener. It never binds the webhook port and never starts a runtime: stdout
is the protocol channel, so logs go to stderr.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from voicecall.engine.client import ControlClient

SERVER_NAME = "voicecall"


def build_server(client: ControlClient) -> Any:
    """A low-level MCP ``Server`` with one tool over ``client``."""
    import mcp.types as types
    from mcp.server.lowlevel import Server

    from voicecall.engine.tool import TOOL_DESCRIPTION, TOOL_PARAMETERS, voice_call

    tool = types.Tool(name="voice_call", description=TOOL_DESCRIPTION, input_schema=TOOL_PARAMETERS)

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[tool])

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        if params.name != "voice_call":
            result: dict[str, Any] = {"error": f"unknown tool {params.name!r}; this server has voice_call"}
        else:
            result = await voice_call(client, **dict(params.arguments or {}))
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=json.dumps(result))],
            structured_content=result, is_error="error" in result,
        )

    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("voicecall")
    except PackageNotFoundError:   # a checkout without metadata still serves
        ver = "0"
    return Server(SERVER_NAME, version=ver, on_list_tools=list_tools, on_call_tool=call_tool)


async def serve_stdio(client: ControlClient) -> None:
    from mcp.server.stdio import stdio_server

    server = build_server(client)
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


@click.command("mcp")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="Config file (default: $VOICECALL_CONFIG, ./voicecall.yaml, built-in).")
def mcp(config_path: str | None) -> None:
    """Serve the voice_call tool over MCP on stdio (talks to a running serve)."""
    import anyio

    from voicecall.engine.cli.ops import load
    from voicecall.engine.client import ControlClient

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    settings = load(config_path, as_json=False)
    anyio.run(serve_stdio, ControlClient(settings))
