"""Bounded body reads (413/408) and the preflight, through a real aiohttp
server on 127.0.0.1 driven by a raw socket client, so the test controls
exactly which bytes arrive and when."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from voicecall.engine.security import (
    BodyTimeout,
    BodyTooLarge,
    InFlightLimiter,
    Rejection,
    SecurityPolicy,
    check_preflight,
    read_body,
)

LIMIT = 4096
TIMEOUT_S = 0.3          # the handler's body deadline; the slow client never finishes
POLICY = SecurityPolicy(max_body=LIMIT, body_timeout_s=TIMEOUT_S)
REQUIRED = ("x-twilio-signature",)
Connect = Callable[[], Awaitable["Raw"]]
LIMITER = web.AppKey("limiter", InFlightLimiter)


async def _handler(request: web.Request) -> web.Response:
    """What engine/server.py will do: preflight, bounded read, reply."""
    limiter: InFlightLimiter = request.app[LIMITER]
    peer = request.remote or ""
    try:
        check_preflight(POLICY, limiter, method=request.method, raw_path=request.raw_path,
                        headers={k.lower(): v for k, v in request.headers.items()},
                        peer=peer, required_headers=REQUIRED)
        with limiter.leaving(peer):
            body = await read_body(request.content, declared_length=request.content_length,
                                   limit=POLICY.max_body, timeout_s=POLICY.body_timeout_s)
    except Rejection as rejection:
        return web.Response(status=rejection.http_status, text=rejection.reason,
                            headers=rejection.headers)
    return web.Response(text=f"{len(body)} {hashlib.sha256(body).hexdigest()}")


@pytest.fixture
async def port() -> AsyncIterator[int]:
    app = web.Application()
    app[LIMITER] = InFlightLimiter(8)
    app.router.add_route("*", "/{tail:.*}", _handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


class Raw:
    """A bare HTTP/1.1 client over an asyncio stream."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def head(self, target: str, headers: dict[str, str], method: str = "POST") -> None:
        lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        await self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    async def response(self) -> tuple[int, str]:
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
        body = await self.reader.readexactly(length)
        return int(status_line.split()[1]), body.decode()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


SIGNED = {"X-Twilio-Signature": "c2ln"}


@pytest.fixture
async def connect(port: int) -> AsyncIterator[Connect]:
    """Open raw clients; all are closed at teardown, even when a test fails."""
    clients: list[Raw] = []

    async def open_one() -> Raw:
        clients.append(await Raw.connect(port))
        return clients[-1]

    yield open_one
    for client in clients:
        await client.close()

async def test_normal_body(connect: Connect) -> None:
    client = await connect()
    body = b"CallSid=CA1&From=%2B15550001111"
    await client.head("/voice/webhook?type=voice", {**SIGNED, "Content-Length": str(len(body))})
    await client.send(body)
    assert await client.response() == (200, f"{len(body)} {hashlib.sha256(body).hexdigest()}")


async def test_body_exactly_at_the_limit(connect: Connect) -> None:
    client = await connect()
    body = b"x" * LIMIT
    await client.head("/voice/webhook", {**SIGNED, "Content-Length": str(LIMIT)})
    await client.send(body)
    assert await client.response() == (200, f"{LIMIT} {hashlib.sha256(body).hexdigest()}")


async def test_small_chunked_body(connect: Connect) -> None:
    client = await connect()
    await client.head("/voice/webhook", {**SIGNED, "Transfer-Encoding": "chunked"})
    await client.send(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    assert await client.response() == (200, f"11 {hashlib.sha256(b'hello world').hexdigest()}")


async def test_oversized_content_length_is_refused_without_reading(connect: Connect) -> None:
    client = await connect()
    # Announce 10 MB, send 10 bytes: the 413 can only arrive because the
    # server did not wait for the rest (otherwise it would time out: 408).
    await client.head("/voice/webhook", {**SIGNED, "Content-Length": str(10_000_000)})
    await client.send(b"0123456789")
    assert await client.response() == (413, "body_too_large")


async def test_content_length_one_over_the_limit(connect: Connect) -> None:
    client = await connect()
    await client.head("/voice/webhook", {**SIGNED, "Content-Length": str(LIMIT + 1)})
    assert await client.response() == (413, "body_too_large")


async def test_chunked_body_growing_past_the_limit(connect: Connect) -> None:
    client = await connect()
    await client.head("/voice/webhook", {**SIGNED, "Transfer-Encoding": "chunked"})
    chunk = b"y" * 1000
    for _ in range(5):          # 5000 bytes > 4096, and the body never ends
        await client.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    assert await client.response() == (413, "body_too_large")


async def test_slow_body_times_out(connect: Connect) -> None:
    client = await connect()
    await client.head("/voice/webhook", {**SIGNED, "Content-Length": "100"})

    async def trickle() -> None:
        for _ in range(99):     # one byte short: the body can never complete
            await client.send(b"z")
            await asyncio.sleep(0.02)

    task = asyncio.create_task(trickle())
    try:
        assert await client.response() == (408, "body_timeout")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await task


async def test_missing_signature_is_401_before_the_body(connect: Connect) -> None:
    client = await connect()
    await client.head("/voice/webhook", {"Content-Length": str(10_000_000)})
    assert await client.response() == (401, "missing_signature")


@pytest.mark.parametrize(("target", "method", "expected"), [
    ("/voice/webhook/../x", "POST", (404, "not_found")),
    ("//voice/webhook", "POST", (404, "not_found")),
    ("/voice/webhook%2F", "POST", (404, "not_found")),
    ("/voice/webhook/", "POST", (404, "not_found")),
    ("/voice/webhook", "GET", (405, "method_not_allowed")),
])
async def test_preflight_sees_the_raw_path(connect: Connect, target: str, method: str,
                                           expected: tuple[int, str]) -> None:
    client = await connect()
    await client.head(target, {**SIGNED, "Content-Length": "0"}, method=method)
    assert await client.response() == expected


# ------------------------------------------------ read_body without a server


async def _feed(data: bytes, *, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


async def test_read_body_unit() -> None:
    assert await read_body(await _feed(b"abc"), declared_length=3, limit=3, timeout_s=5) == b"abc"
    assert await read_body(await _feed(b""), declared_length=0, limit=3, timeout_s=5) == b""
    assert await read_body(await _feed(b"abc"), declared_length=None, limit=3,
                           timeout_s=5) == b"abc"
    with pytest.raises(BodyTooLarge) as info:
        await read_body(await _feed(b"abcd", eof=False), declared_length=None, limit=3,
                        timeout_s=5)
    assert (info.value.http_status, info.value.reason) == (413, "body_too_large")


async def test_read_body_refuses_declared_length_before_reading() -> None:
    class Untouchable:
        async def read(self, n: int = -1) -> bytes:
            raise AssertionError("read() must not be called")

    with pytest.raises(BodyTooLarge):
        await read_body(Untouchable(), declared_length=4, limit=3, timeout_s=5)


async def test_read_body_timeout_unit() -> None:
    with pytest.raises(BodyTimeout) as info:
        await read_body(await _feed(b"ab", eof=False), declared_length=None, limit=10,
                        timeout_s=0.05)
    assert (info.value.http_status, info.value.reason) == (408, "body_timeout")
    assert "2 bytes" in info.value.log_message
