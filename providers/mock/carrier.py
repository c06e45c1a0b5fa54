"""The far side of the mock carrier: a real aiohttp server on loopback with a
small REST API, driving each call on the injected clock and calling the
runtime's webhook exactly as a real carrier does — every request signed
(DESIGN §4), status callbacks possibly twice or out of order (``Chaos``).

REST API (JSON in and out; errors are ``{"code", "message"}`` like Twilio's):

- ``POST /v1/calls`` ``{to, from, url, statusCallback, document, timeLimit,
  ringTimeout, sendDigits, machineDetection, machineCallback}`` → 201
  ``{"sid", "status": "queued"}``
- ``POST /v1/calls/{sid}`` ``{"document": {...}}`` replaces what the call is
  doing; ``{"status": "completed"}`` hangs it up
- ``GET /v1/calls/{sid}`` → ``{sid, status, direction, from, to, endReason}``
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import json
import random
import secrets
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from aiohttp import ClientError, web

from voicecall.engine.security import mock_headers
from voicecall.providers.callee import Callee
from voicecall.providers.emulation import FarSide, RestServer
from voicecall.providers.mock.calls import (
    E164,
    FINAL_STATUS,
    SEND_DIGITS,
    CarrierFault,
    Chaos,
    LogEntry,
    MockCall,
)
from voicecall.providers.mock.driver import CallDriver
from voicecall.providers.mock.provider import ANSWERED_BY, dumps

if TYPE_CHECKING:
    from voicecall.engine.clock import Clock

WEBHOOK_TIMEOUT_S = 15.0          # carriers give up on a webhook after ~15 s (DESIGN §3.1)
DEFAULT_RING_TIMEOUT_S = 60


class MockCarrier(FarSide):
    def __init__(self, *, secret: bytes, clock: Clock, default_callee: Callee | None = None,
                 chaos: Chaos | None = None, time_scale: float = 1.0):
        if time_scale <= 0:
            raise ValueError(f"time_scale must be positive, got {time_scale!r}")
        self.secret = secret
        self.clock = clock
        self.default_callee = default_callee or Callee()
        self.chaos = chaos
        self.time_scale = time_scale
        self.calls: dict[str, MockCall] = {}
        self._callees: dict[str, Callee] = {}
        self._answered_by: dict[str, str] = {}
        self._index = itertools.count()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._rest = RestServer()
        self.base_url = ""

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> str:
        """Listen on 127.0.0.1 (a free port); return the REST base URL."""
        app = web.Application()
        app.router.add_post("/v1/calls", self._create)
        app.router.add_post("/v1/calls/{sid}", self._update)
        app.router.add_get("/v1/calls/{sid}", self._fetch)
        self.base_url = await self._rest.start(app, WEBHOOK_TIMEOUT_S)
        return self.base_url

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._rest.stop()

    async def __aenter__(self) -> MockCarrier:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- what tests and the demo use -------------------------------------------------
    def set_callee(self, to_number: str, callee: Callee, *, answered_by: str = "human") -> None:
        """Script the person who answers ``to_number`` (each call gets its own copy);
        ``answered_by`` is what answering-machine detection reports for them."""
        if answered_by not in ANSWERED_BY:
            raise ValueError(f"answered_by must be one of {', '.join(ANSWERED_BY)}, got {answered_by!r}")
        super().set_callee(to_number, callee, answered_by=answered_by)

    async def wait_ended(self, sid: str, timeout: float = 5.0) -> MockCall:
        """Wait (real seconds) until the call ended and its last callback went out."""
        call = self._call(sid)
        await asyncio.wait_for(call.finished.wait(), timeout)
        return call

    async def dial_in(self, from_number: str, to_number: str, webhook_url: str,
                      callee: Callee | None = None) -> str:
        """Place an inbound call to the runtime's webhook; ``callee`` is the caller's script.
        Status callbacks go to ``webhook_url?type=status``, as an operator configures them."""
        for name, number in (("from", from_number), ("to", to_number)):
            if not E164.fullmatch(number):
                raise ValueError(f"dial_in {name} number {number!r} is not E.164")
        call = self._new_call("inbound", from_number, to_number, _with_type(webhook_url, "voice"),
                              _with_type(webhook_url, "status"), copy.deepcopy(callee or Callee()))
        call.task = self._spawn(CallDriver(self, call).inbound())
        return call.sid

    # -- what the driver uses --------------------------------------------------------
    def note(self, call: MockCall, kind: str, detail: Any) -> None:
        call.log.append(LogEntry(self.clock.now(), kind, detail))

    async def fetch(self, call: MockCall, url: str, event: str, *, source: str, **extra: Any) -> dict[str, Any]:
        """POST ``url`` and return the document it answers; anything else fails the call."""
        url, body, _ = self._envelope(call, url, event, extra)
        status, text = await self._send(call, url, body, event)
        what = f"{_type_of(url)}/{event}"
        if status != 200:
            raise CarrierFault(f"webhook answered HTTP {status} to {what} (application error)")
        try:
            doc = json.loads(text)
        except ValueError:
            raise CarrierFault(f"webhook answered {what} with a body that is not JSON: {text[:80]!r}") from None
        if not isinstance(doc, dict):
            raise CarrierFault(f"webhook answered {what} with JSON that is not a document")
        self.note(call, "document", {"source": source, "commands": doc.get("commands")})
        return doc

    async def notify(self, call: MockCall, url: str, event: str, **extra: Any) -> None:
        """POST a callback whose answer the carrier ignores (it never stops the call)."""
        url, body, _ = self._envelope(call, url, event, extra)
        with contextlib.suppress(CarrierFault):
            await self._send(call, url, body, event)

    async def send_status(self, call: MockCall, event: str, status: str | None = None, **extra: Any) -> None:
        if status is not None:
            call.status = status
        if not call.status_callback:
            return
        envelope = self._envelope(call, call.status_callback, event, extra)
        async with call.status_lock:
            deliveries = [envelope]
            if call.rng is not None and self.chaos is not None:
                # Two draws per callback whatever happens, so a seed replays exactly.
                twice = call.rng.random() < self.chaos.duplicate
                late = call.rng.random() < self.chaos.reorder
                if twice:
                    deliveries.append(envelope)
                if late and event != "ended":
                    call.held.extend(deliveries)
                    return
            deliveries.extend(call.held)
            call.held.clear()
            for url, body, name in deliveries:
                with contextlib.suppress(CarrierFault):   # a failed status callback never stops a call
                    await self._send(call, url, body, name)

    async def finish(self, call: MockCall, reason: str) -> None:
        """End the call once: final status, then the ``ended`` callback."""
        if self._mark_ended(call, reason):
            await self._deliver_ended(call)

    def _mark_ended(self, call: MockCall, reason: str) -> bool:
        if call.end_reason is not None:
            return False
        call.end_reason = reason
        call.status = FINAL_STATUS.get(reason, "completed")
        self.note(call, "ended", {"reason": reason})
        return True

    async def _deliver_ended(self, call: MockCall) -> None:
        try:
            await self.send_status(call, "ended", reason=call.end_reason)
        finally:
            call.finished.set()

    # -- webhook I/O -----------------------------------------------------------------
    def _envelope(self, call: MockCall, url: str, event: str, extra: dict[str, Any]) -> tuple[str, bytes, str]:
        call.seq += 1
        # The URL rides in the signed body: the signature covers the body only, and
        # MockProvider.parse refuses a query that differs from it.
        body = {"sid": call.sid, "event": event, "seq": call.seq, "from": call.from_number,
                "to": call.to_number, "direction": call.direction, "url": url, **extra}
        return url, dumps(body), event

    async def _send(self, call: MockCall, url: str, body: bytes, event: str) -> tuple[int, str]:
        if self._rest.session is None:
            raise RuntimeError("MockCarrier.start() was not called")
        # Signed at send time, as a real carrier does: a late delivery carries a late timestamp.
        headers = {"Content-Type": "application/json", **mock_headers(self.secret, body, self.clock.now())}
        try:
            async with self._rest.session.post(url, data=body, headers=headers) as resp:
                status, text = resp.status, await resp.text()
        except (ClientError, TimeoutError) as exc:
            self.note(call, "request", {"type": _type_of(url), "event": event, "error": str(exc) or type(exc).__name__})
            raise CarrierFault(f"webhook {url} unreachable: {exc or type(exc).__name__}") from None
        self.note(call, "request", {"type": _type_of(url), "event": event, "status": status})
        return status, text

    # -- calls ------------------------------------------------------------------------
    def _new_call(self, direction: str, from_number: str, to_number: str, url: str | None,
                  status_callback: str | None, callee: Callee) -> MockCall:
        index = next(self._index)
        call = MockCall(sid="MC" + secrets.token_hex(16), index=index, direction=direction,
                        from_number=from_number, to_number=to_number, url=url,
                        status_callback=status_callback, callee=callee)
        if self.chaos is not None:
            # Per call, keyed by its order: concurrent calls do not steal each other's draws.
            call.rng = random.Random(self.chaos.seed * 1_000_003 + index)
        self.calls[call.sid] = call
        return call

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _call(self, sid: str) -> MockCall:
        try:
            return self.calls[sid]
        except KeyError:
            raise KeyError(f"no mock call {sid!r}") from None

    # -- REST handlers -----------------------------------------------------------------
    async def _create(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if isinstance(body, web.Response):
            return body
        to, from_ = body.get("to"), body.get("from")
        if not isinstance(to, str) or not E164.fullmatch(to):
            return _error(400, 21211, f"The 'To' number {to!r} is not a valid phone number.")
        if not isinstance(from_, str) or not E164.fullmatch(from_):
            return _error(400, 21212, f"The 'From' number {from_!r} is not a valid phone number.")
        url, callback, document = body.get("url"), body.get("statusCallback"), body.get("document")
        if not _is_url(url):
            return _error(400, 21205, f"Url {url!r} is not a valid http(s) URL.")
        if callback is not None and not _is_url(callback):
            return _error(400, 21609, f"StatusCallback {callback!r} is not a valid http(s) URL.")
        if document is not None and not isinstance(document, dict):
            return _error(400, 20001, "document must be a JSON object or null.")
        limit, ring = body.get("timeLimit"), body.get("ringTimeout", DEFAULT_RING_TIMEOUT_S)
        if limit is not None and not _positive_int(limit):
            return _error(400, 20001, f"timeLimit must be a positive integer, got {limit!r}.")
        if ring is None:
            ring = DEFAULT_RING_TIMEOUT_S
        if not _positive_int(ring):
            return _error(400, 20001, f"ringTimeout must be a positive integer, got {ring!r}.")
        digits = body.get("sendDigits")
        if digits is not None and (not isinstance(digits, str) or not SEND_DIGITS.fullmatch(digits)):
            return _error(400, 21479, f"sendDigits {digits!r} may hold only 0-9, *, # and w.")
        amd, amd_url = body.get("machineDetection", False), body.get("machineCallback")
        if not isinstance(amd, bool):
            return _error(400, 20001, f"machineDetection must be true or false, got {amd!r}.")
        if amd and not _is_url(amd_url):
            return _error(400, 21205, f"machineCallback {amd_url!r} is not a valid http(s) URL.")
        callee = copy.deepcopy(self._callees.get(to, self.default_callee))
        call = self._new_call("outbound", from_, to, url, callback, callee)
        call.document, call.time_limit, call.ring_timeout, call.send_digits = document, limit, ring, digits
        call.machine_callback = amd_url if amd else None
        call.answered_by = self._answered_by.get(to, "human")
        call.task = self._spawn(CallDriver(self, call).outbound())
        return web.json_response({"sid": call.sid, "status": call.status}, status=201)

    async def _update(self, request: web.Request) -> web.Response:
        call = self.calls.get(request.match_info["sid"])
        if call is None:
            return _error(404, 20404, f"The requested call {request.match_info['sid']!r} was not found.")
        body = await _json_body(request)
        if isinstance(body, web.Response):
            return body
        if body.get("status") == "completed":
            self.note(call, "rest", {"status": "completed"})
            if self._mark_ended(call, "canceled"):
                if call.task is not None:
                    call.task.cancel()
                # Answer now; the ended callback must not wait on the caller of this API.
                self._spawn(self._deliver_ended(call))
            return web.json_response(call.public())
        document = body.get("document")
        if not isinstance(document, dict):
            return _error(400, 20001, 'Send {"document": {...}} or {"status": "completed"}.')
        if call.status != "in-progress":
            return _error(400, 21220, f"Call is not in-progress ({call.status}). Cannot redirect.")
        self.note(call, "rest", {"document": document.get("commands")})
        self.note(call, "document", {"source": "push", "commands": document.get("commands")})
        call.pushes.put_nowait(document)
        return web.json_response(call.public())

    async def _fetch(self, request: web.Request) -> web.Response:
        call = self.calls.get(request.match_info["sid"])
        if call is None:
            return _error(404, 20404, f"The requested call {request.match_info['sid']!r} was not found.")
        return web.json_response(call.public())


async def _json_body(request: web.Request) -> dict[str, Any] | web.Response:
    try:
        body = json.loads(await request.read() or b"null")
    except ValueError:
        return _error(400, 20001, "Request body is not JSON.")
    if not isinstance(body, dict):
        return _error(400, 20001, "Request body must be a JSON object.")
    return body


def _error(status: int, code: int, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message, "status": status}, status=status)


def _is_url(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://"))


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _type_of(url: str) -> str | None:
    return dict(parse_qsl(urlsplit(url).query)).get("type")


def _with_type(url: str, type_: str) -> str:
    sep = "&" if urlsplit(url).query else "?"
    return f"{url}{sep}{urlencode({'type': type_})}"
