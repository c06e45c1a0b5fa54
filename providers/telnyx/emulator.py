"""A local Telnyx: the Call Control v2 REST API our client talks to, and a
carrier that posts Ed25519-signed JSON events to our webhook the way Telnyx
does. Only for tests, ``flows simulate`` and the demo; it binds 127.0.0.1.

Faithful, not friendly (DESIGN §8): Bearer auth, errors in Telnyx's shape
(``emu_rest.py``), commands refused on calls not answered yet or already
ended, ``command_id`` deduplication, every event signed with a key pair the
emulator generates (settings ``telnyx.publicKey`` = ``public_key_b64``), and
events possibly delivered twice or out of order (seeded ``chaos``).

Running a runtime against it (what a harness does)::

    emulator = TelnyxEmulator("KEY", clock=clock, chaos=chaos)   # the runtime's clock
    await emulator.start()
    settings = settings.replace(provider="telnyx", fromNumber="+15550001000",
                                telnyx=emulator.settings())       # apiKey connectionId publicKey apiBaseUrl
    runtime = VoiceCallRuntime(settings, clock=clock)
    emulator.set_callee(to, callee)             # outbound; inbound: dial_in(from, to, runtime.public_url, callee)
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
import secrets
import uuid
from collections.abc import Coroutine, Mapping
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from voicecall.engine.clock import Clock, RealClock
from voicecall.providers.callee import Callee
from voicecall.providers.emulation import Chaos, FarSide, LogEntry, RestServer, coerce_chaos
from voicecall.providers.telnyx.emu_call import CallRunner, EmuCall, cancel_quietly
from voicecall.providers.telnyx.emu_rest import (
    AUTH_FAILED,
    E164,
    NOT_FOUND,
    CommandRefused,
    check_command,
    check_dial,
)
from voicecall.providers.telnyx.signature import public_key_b64, signed_headers

__all__ = ["Chaos", "LogEntry", "TelnyxEmulator"]

WEBHOOK_TIMEOUT_S = 10.0
MEDIA = frozenset({"speak", "playback_start", "gather_using_speak", "gather_using_audio", "gather"})


class TelnyxEmulator(FarSide):
    ENDED = "finished"       # set once the call's ``call.hangup`` went out

    def __init__(self, api_key: str, *, clock: Clock | None = None, default_callee: Callee | None = None,
                 chaos: Chaos | Mapping[str, Any] | Any = None, time_scale: float = 1.0):
        """``clock``: shared with the runtime in simulations; every emulated duration
        is ``seconds * time_scale`` on it."""
        if time_scale <= 0:
            raise ValueError(f"time_scale must be positive, got {time_scale!r}")
        self._api_key = api_key
        self.clock: Clock = clock or RealClock()
        self.default_callee = default_callee or Callee()
        self.chaos = coerce_chaos(chaos)
        self.time_scale = time_scale
        self._private_key = Ed25519PrivateKey.generate()
        self.public_key_b64 = public_key_b64(self._private_key)
        self.calls: dict[str, EmuCall] = {}
        self.requests: list[dict[str, Any]] = []      # every REST request: method, path, command_id
        self._callees: dict[str, Callee] = {}
        self._answered_by: dict[str, str] = {}
        self._fail_next: list[tuple[int, bool]] = []
        self._tasks: dict[str, set[asyncio.Task[Any]]] = {}
        self._count = 0
        self._rest = RestServer()
        self.base_url = ""

    # -- lifecycle and what tests use ---------------------------------------------------
    async def start(self) -> str:
        from aiohttp import web

        app = web.Application()
        app.router.add_post("/v2/calls", self._dial)
        app.router.add_post("/v2/calls/{ccid}/actions/{name}", self._command)
        self.base_url = await self._rest.start(app, WEBHOOK_TIMEOUT_S)
        return self.base_url

    async def stop(self) -> None:
        for tasks in self._tasks.values():
            for task in list(tasks):
                await cancel_quietly(task)
        await self._rest.stop()

    def settings(self, connection_id: str = "emulator-connection") -> dict[str, str]:
        """The ``telnyx`` settings block that points a runtime at this emulator (after ``start``)."""
        if not self.base_url:
            raise RuntimeError("TelnyxEmulator.start() was not called")
        return {"apiKey": self._api_key, "connectionId": connection_id, "publicKey": self.public_key_b64,
                "apiBaseUrl": self.base_url}

    def fail_next(self, count: int = 1, status: int = 500, *, executed: bool = False) -> None:
        """The next ``count`` REST requests answer HTTP ``status``; ``executed``: after running
        the request (a reply lost on the way back), so a retry must not run it again."""
        self._fail_next.extend([(status, executed)] * count)

    async def dial_in(self, from_: str, to: str, webhook_url: str, callee: Callee | None = None) -> str:
        """A caller rings our number: Telnyx posts ``call.initiated`` (incoming) to the
        connection's webhook URL and rings until the call is answered or the caller gives up."""
        for name, number in (("from", from_), ("to", to)):
            if not E164.match(number):
                raise ValueError(f"dial_in {name} number {number!r} is not E.164")
        call = self._new_call("incoming", from_, to, "", webhook_url, copy.deepcopy(callee or Callee()))
        self.spawn(call, CallRunner(self, call).inbound())
        return call.ccid

    # -- what calls use -------------------------------------------------------------------
    def spawn(self, call: EmuCall, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        tasks = self._tasks.setdefault(call.ccid, set())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return task

    async def emit(self, call: EmuCall, event_type: str, *, client_state: str | None = None, **fields: Any) -> None:
        """Queue one event for the call's webhook (delivered in order by its sender)."""
        if call.finished.is_set():
            return
        state = client_state if client_state is not None else call.client_state
        payload = {"call_control_id": call.ccid, "call_leg_id": call.leg_id, "call_session_id": call.session_id,
                   "connection_id": call.connection_id, "from": call.from_, "to": call.to,
                   "start_time": _iso(call.started_at), **fields}
        if state:
            payload["client_state"] = state
        body = {"data": {"record_type": "event", "event_type": event_type, "id": str(uuid.uuid4()),
                         "occurred_at": _iso(self.now()), "payload": payload},
                "meta": {"attempt": 1, "delivered_to": call.webhook_url}}
        call.outbox.put_nowait((call.webhook_url, json.dumps(body, separators=(",", ":")).encode(), event_type))

    def final(self, call: EmuCall, cause: str, source: str) -> None:
        """Queue ``call.hangup`` and stop everything else the call was doing."""
        current = asyncio.current_task()
        for task in list(self._tasks.get(call.ccid, ())):
            if task is not current and task is not call.sender:
                task.cancel()
        call.outbox.put_nowait(None)         # marker: the hangup goes out after what is queued
        call.pending_hangup = (cause, source)

    # -- webhook delivery -------------------------------------------------------------------
    async def _sender(self, call: EmuCall) -> None:
        try:
            while True:
                item = await call.outbox.get()
                if item is None:
                    await self._hangup_event(call)
                    return
                await self._deliver(call, item, final=False)
        finally:
            call.finished.set()

    async def _hangup_event(self, call: EmuCall) -> None:
        cause, source = call.pending_hangup or ("normal_clearing", "unknown")
        body: dict[str, Any] = {"data": {"record_type": "event", "event_type": "call.hangup", "id": str(uuid.uuid4()),
                         "occurred_at": _iso(self.now()),
                         "payload": {"call_control_id": call.ccid, "call_leg_id": call.leg_id,
                                     "call_session_id": call.session_id, "connection_id": call.connection_id,
                                     "from": call.from_, "to": call.to, "state": "hangup",
                                     "client_state": call.client_state, "start_time": _iso(call.started_at),
                                     "hangup_cause": cause, "hangup_source": source,
                                     "sip_hangup_cause": "unspecified"}},
                "meta": {"attempt": 1, "delivered_to": call.webhook_url}}
        if not call.client_state:
            del body["data"]["payload"]["client_state"]
        await self._deliver(call, (call.webhook_url, json.dumps(body, separators=(",", ":")).encode(),
                                   "call.hangup"), final=True)

    async def _deliver(self, call: EmuCall, item: tuple[str, bytes, str], *, final: bool) -> None:
        deliveries = [item]
        if call.rng is not None:
            # Two draws per event whatever happens, so a seed replays exactly.
            twice = call.rng.random() < self.chaos.duplicate
            late = call.rng.random() < self.chaos.reorder
            if twice:
                deliveries.append(item)
            if late and not final:
                call.held.extend(deliveries)
                return
        deliveries.extend(call.held)
        call.held.clear()
        for url, body, event_type in deliveries:
            await self._post(call, url, body, event_type)

    async def _post(self, call: EmuCall, url: str, body: bytes, event_type: str) -> None:
        import aiohttp

        # Signed at send time, as Telnyx does: a late delivery carries a late timestamp.
        headers = {"Content-Type": "application/json", "User-Agent": "telnyx-webhooks",
                   **signed_headers(self._private_key, int(self.now()), body)}
        try:
            async with self._rest.session.post(url, data=body, headers=headers) as resp:
                status = resp.status
                await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            call.log.append(LogEntry(self.now(), "request", {"event": event_type, "error": str(exc) or
                                                             type(exc).__name__}))
            return
        call.log.append(LogEntry(self.now(), "request", {"event": event_type, "status": status}))
        if status >= 300:
            call.log.append(LogEntry(self.now(), "error", f"webhook answered HTTP {status} to {event_type}"))

    # -- REST ---------------------------------------------------------------------------
    async def _dial(self, request: Any) -> Any:
        body, refused = await self._read(request)
        if refused is not None:
            return refused
        try:
            options = check_dial(body)
        except CommandRefused as exc:
            return _refusal(exc)
        to = body["to"]
        callee, answered_by = self._callees.get(to, self.default_callee), self.answered_by(to)
        call = self._new_call("outgoing", body["from"], to, body["connection_id"], body["webhook_url"],
                              copy.deepcopy(callee))
        call.client_state = body.get("client_state")
        call.timeout_secs, call.time_limit_secs, call.amd = (options["timeout_secs"], options["time_limit_secs"],
                                                             options["amd"])
        call.answered_by = answered_by
        call.log.append(LogEntry(self.now(), "command", {"name": "dial", "body": body}))
        self.spawn(call, CallRunner(self, call).outbound())
        reply = {"data": {"call_control_id": call.ccid, "call_leg_id": call.leg_id,
                          "call_session_id": call.session_id, "is_alive": False, "record_type": "call"}}
        return self._reply(200, reply)

    async def _command(self, request: Any) -> Any:
        body, refused = await self._read(request)
        if refused is not None:
            return refused
        ccid, name = request.match_info["ccid"], request.match_info["name"]
        call = self.calls.get(ccid)
        if call is None:
            return _refusal(CommandRefused(404, NOT_FOUND, "Resource not found",
                                           f"Call control id {ccid[:60]} was not found."))
        command_id = body.get("command_id")
        if isinstance(command_id, str) and command_id in call.command_ids:
            return self._reply(200, {"data": {"result": "ok"}})   # already run: Telnyx ignores a repeat
        try:
            check_command(name, body, call.state, call.direction)
        except CommandRefused as exc:
            call.log.append(LogEntry(self.now(), "error", f"{name} refused: {exc.title}: {exc.detail}"))
            return _refusal(exc)
        if isinstance(command_id, str):
            call.command_ids.add(command_id)
        call.log.append(LogEntry(self.now(), "command", {"name": name, "body": body}))
        self._run(call, name, body)
        return self._reply(200, {"data": {"result": "ok"}})

    def _run(self, call: EmuCall, name: str, body: dict[str, Any]) -> None:
        runner = CallRunner(self, call)
        if body.get("client_state"):
            call.client_state = body["client_state"]      # later events echo the latest state
        if name == "answer":
            if body.get("webhook_url"):
                call.webhook_url = body["webhook_url"]
            call.answered.set()
        elif name == "reject":
            runner.end("call_rejected", "callee")
        elif name == "hangup":
            runner.end("normal_clearing" if call.state == "answered" else "originator_cancel",
                       "caller" if call.direction == "outgoing" else "callee")
        elif name in MEDIA:
            if name.startswith("gather") and call.gather is not None:
                self.spawn(call, runner.stop_gather())
            call.media.append((name, body))
            call.wake.set()
        elif name == "gather_stop":
            self.spawn(call, runner.stop_gather())
        elif name == "transcription_start":
            call.transcription = body.get("client_state") or call.client_state or ""
            call.listen_pending = True
            call.listening_changed.set()
            call.wake.set()
        elif name == "transcription_stop":
            call.transcription = None
            if call.gather is None:
                runner.cancel_listener()
        elif name == "send_dtmf":
            call.log.append(LogEntry(self.now(), "dtmf", body["digits"]))

    async def _read(self, request: Any) -> tuple[dict[str, Any], Any]:
        """Auth, injected failures, then the JSON body."""
        self.requests.append({"method": request.method, "path": request.path})
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not secrets.compare_digest(key.encode(), self._api_key.encode()):
            return {}, _refusal(CommandRefused(401, AUTH_FAILED, "Authentication failed",
                                               "Could not understand the provided credentials."))
        try:
            body = json.loads(await request.read() or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return {}, _refusal(CommandRefused(400, "10002", "Invalid request",   # [UNVERIFIED] code
                                               "The request body must be a JSON object."))
        self.requests[-1]["command_id"] = body.get("command_id")
        if self._fail_next and not self._fail_next[0][1]:
            status, _ = self._fail_next.pop(0)
            return {}, _refusal(CommandRefused(status, "10007", "Unexpected error",   # [UNVERIFIED] code
                                               "An unexpected error occurred."))
        return body, None

    def _reply(self, status: int, body: dict[str, Any]) -> Any:
        if self._fail_next and self._fail_next[0][1]:
            failed, _ = self._fail_next.pop(0)
            return _refusal(CommandRefused(failed, "10007", "Unexpected error", "An unexpected error occurred."))
        from aiohttp import web

        return web.json_response(body, status=status)

    def _new_call(self, direction: str, from_: str, to: str, connection_id: str, webhook_url: str,
                  callee: Callee) -> EmuCall:
        self._count += 1
        call = EmuCall(ccid="v3:" + secrets.token_urlsafe(24), leg_id=str(uuid.uuid4()),
                       session_id=str(uuid.uuid4()), direction=direction, from_=from_, to=to,
                       connection_id=connection_id or "emulator-connection", webhook_url=webhook_url,
                       callee=callee, started_at=self.now())
        if self.chaos.duplicate or self.chaos.reorder:
            # Per call, keyed by its order: concurrent calls do not steal each other's draws.
            call.rng = random.Random(self.chaos.seed * 1_000_003 + self._count)
        self.calls[call.ccid] = call
        call.sender = self.spawn(call, self._sender(call))
        return call

    def _call(self, ccid: str) -> EmuCall:
        try:
            return self.calls[ccid]
        except KeyError:
            raise KeyError(f"no emulated Telnyx call {ccid!r}") from None


def _refusal(exc: CommandRefused) -> Any:
    from aiohttp import web

    return web.json_response(exc.body(), status=exc.status)


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

