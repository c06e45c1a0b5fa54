"""A loopback stand-in for OpenAI's chat-completions endpoint.

Speaks the real wire shapes (``chat.completion`` objects, OpenAI's error JSON,
Bearer auth) so tests drive the official ``openai`` client unchanged. Replies
are scripted in order; every request is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Scripted:
    """One scripted answer: a content string (or None for a null content), an
    HTTP status (non-200 sends an error body), and an optional delay."""

    content: str | None = ""
    status: int = 200
    delay: float = 0.0
    error: dict[str, Any] | None = None
    finish_reason: str = "stop"


@dataclass
class Recorded:
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeOpenAI:
    api_key: str = "sk-test-fake"
    default: Scripted = field(default_factory=lambda: Scripted(content='{"spoken": "Okay."}'))
    requests: list[Recorded] = field(default_factory=list)
    _script: list[Scripted] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    port: int = 0
    _closing: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *answers: Scripted | str) -> None:
        """Queue answers; a plain string is a 200 reply with that content."""
        self._script.extend(a if isinstance(a, Scripted) else Scripted(content=a) for a in answers)

    async def start(self) -> FakeOpenAI:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def close(self) -> None:
        self._closing.set()  # release scripted delays so shutdown does not wait on them
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @staticmethod
    def _error(status: int, message: str, type_: str, code: str | None) -> web.Response:
        # https://platform.openai.com/docs/guides/error-codes — body shape {"error": {...}}
        body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
        return web.json_response(body, status=status)

    async def _completions(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        if auth != f"Bearer {self.api_key}":
            shown = auth.removeprefix("Bearer ")
            return self._error(401, f"Incorrect API key provided: {shown[:3]}***{shown[-4:]}.",
                               "invalid_request_error", "invalid_api_key")
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return self._error(400, "We could not parse the JSON body of your request.",
                               "invalid_request_error", None)
        self.requests.append(Recorded(dict(request.headers), body))
        if not isinstance(body.get("model"), str) or not isinstance(body.get("messages"), list):
            return self._error(400, "you must provide a model parameter and messages",
                               "invalid_request_error", None)
        answer = self._script.pop(0) if self._script else self.default
        if answer.delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), answer.delay)
        if answer.status != 200:
            err = answer.error or {"message": "The server had an error while processing your "
                                   "request.", "type": "server_error", "code": None}
            return self._error(answer.status, err["message"], err["type"], err.get("code"))
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
        completion_tokens = len((answer.content or "").split())
        return web.json_response({
            "id": f"chatcmpl-fake{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": answer.content, "refusal": None},
                "logprobs": None,
                "finish_reason": answer.finish_reason,
            }],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
            "system_fingerprint": "fp_fake",
        })
