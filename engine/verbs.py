"""The control verbs of a runtime: place a call, speak, send digits, take a
turn, end, report. ``VoiceCallRuntime`` inherits them; RPC, the CLI, the
agent tool and MCP all come through here."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .errors import (
    CallEnded,
    CallNotConnected,
    CallNotFound,
    CarrierFailed,
    ConcurrencyLimit,
    DestinationNotAllowed,
    InvalidParams,
    ProviderError,
    VoiceCallError,
)
from .events import Event
from .program import Program

if TYPE_CHECKING:
    from voicecall.providers.base import CallUrls, Provider

    from .clock import Clock
    from .config import Settings
    from .engine import CallEngine
    from .flows import Flow, FlowLibrary
    from .record import CallRecord
    from .session import Session
    from .store import Store

DTMF_RE = re.compile(r"^[0-9*#wW]{1,64}$")
MODE_FLOWS = {"notify": "notify", "conversation": "conversation"}
# The carrier's own cap is the backstop if this runtime dies; the supervisor
# normally ends the call first, with reason "timeout".
CARRIER_CAP_GRACE_S = 10


class ControlVerbs:
    """Mixed into VoiceCallRuntime, which provides what is declared here."""

    if TYPE_CHECKING:
        settings: Settings
        sessions: dict[str, Session]
        clock: Clock
        _by_provider_id: dict[str, Session]

        @property
        def store(self) -> Store: ...
        @property
        def engine(self) -> CallEngine: ...
        @property
        def provider(self) -> Provider: ...
        @property
        def flows(self) -> FlowLibrary: ...
        def urls_for(self, call_id: str) -> CallUrls: ...
        def _session(self, record: CallRecord, flow: Flow) -> Session: ...
        def _finished(self, s: Session) -> None: ...
        def _new_record(self, flow: Flow, *, direction: str, from_number: str, to_number: str,
                        message: str | None, vars_: Mapping[str, Any]) -> CallRecord: ...

    async def initiate(self, *, to: str | None = None, message: str | None = None,
                       mode: str | None = None, flow: str | None = None, vars: Mapping[str, Any] | None = None,
                       dtmf_sequence: str | None = None) -> str:
        """Place an outbound call; returns its callId once the carrier accepted it."""
        from .errors import FlowError
        from .flows import validate_vars, vars_with_defaults
        from .inbound import normalise_e164

        target = normalise_e164(to or self.settings.get("toNumber"))
        if target is None:
            raise InvalidParams(f"'to' must be an E.164 number like +15550001234, got {to!r}"
                                if to else "no 'to' number given and no toNumber configured")
        allow = tuple(self.settings.get("outbound.allowTo", ()) or ())
        if allow and not any(target.startswith(prefix) for prefix in allow):
            raise DestinationNotAllowed(f"{target} is not allowed by outbound.allowTo", to=target)
        mode = mode or self.settings.get("outbound.defaultMode", "notify")
        name = flow or MODE_FLOWS.get(str(mode))
        if name is None:
            raise InvalidParams(f"unknown mode {mode!r}: use notify or conversation")
        try:
            chosen = self.flows.get(name)
        except (KeyError, FlowError) as exc:
            raise InvalidParams(str(exc).strip("'\"")) from None
        if chosen.kind != "call":
            raise InvalidParams(f"flow {name!r} is a {chosen.kind} flow and cannot drive a call")
        if missing := chosen.unsupported(self.provider.name, self.provider.capabilities):
            raise InvalidParams(f"flow {name!r} cannot run on {self.provider.name}: {missing[0].message}")
        if chosen.mode == "notify" and not (message or "").strip():
            raise InvalidParams("a notify call needs a message")
        if dtmf_sequence:
            if chosen.mode == "notify":
                raise InvalidParams("dtmfSequence works with conversation calls; use dtmf on the live call")
            if not DTMF_RE.match(dtmf_sequence):
                raise InvalidParams("dtmfSequence may hold only 0-9, *, # and w")
        if problems := validate_vars(chosen, dict(vars or {})):
            raise InvalidParams("invalid vars: " + "; ".join(problems))
        limit = int(self.settings.get("maxConcurrentCalls", 1))
        if len(self.sessions) >= limit:
            raise ConcurrencyLimit(f"maximum concurrent calls ({limit}) reached", limit=limit)
        record = self._new_record(chosen, direction="outbound", from_number=str(self.settings.get("fromNumber") or
                                  "+15550000000"), to_number=target, message=message,
                                  vars_=vars_with_defaults(chosen, dict(vars or {})))
        record.dtmf_sequence = dtmf_sequence
        s = self._session(record, chosen)   # reserves the slot before any await
        try:
            await self.store.put_flow(chosen.hash, chosen.name, chosen.source)
            await self.store.commit(record, events=[{"at": record.started_at, "type": "rpc.initiate",
                                                     "data": {"flow": chosen.name, "to": target}}])
            opening = self._opening(s)
            from voicecall.providers.base import PlaceRequest

            request = PlaceRequest(
                call_id=record.call_id, from_number=record.from_number, to_number=target,
                urls=self.urls_for(record.call_id), opening=opening,
                ring_timeout_s=max(1, int(self.settings.get("ringTimeoutMs", 30000)) // 1000),
                time_limit_s=int(self.settings.get("maxDurationSeconds", 300)) + CARRIER_CAP_GRACE_S,
                send_digits=dtmf_sequence,
            )
            s.opening_sent = opening is not None
            s.fetch_expected = opening is None or opening.steps[-1].kind in ("keepalive", "redirect")
            provider_call_id = await self.provider.place(request)
        except ProviderError as exc:
            async with s.lock:
                s.pending_end_reason = "failed"
                self.engine._finish(s, "failed", None)
                s.changed = True
                await self.engine.persist(s)
            raise CarrierFailed(f"the carrier refused the call: {exc}", provider=self.settings.provider) from None
        except BaseException:
            self._finished(s)
            raise
        async with s.lock:
            if not record.provider_call_id:
                record.provider_call_id = provider_call_id
            self._by_provider_id[provider_call_id] = s
            s.changed = True
            await self.engine.persist(s)
        return record.call_id

    def _opening(self, s: Session) -> Program | None:
        """The opening state's program, rendered at placement so it can go inline."""
        from .flows import render_actions

        state = next((st for st in s.flow.states.values() if st.opening), None)
        if state is None:
            return None
        steps = [st for st in render_actions(state.do, s.context(self.engine.config, None, state.name))
                 if st.kind not in ("goto",)]
        program = Program(state.name, tuple(steps))
        if not program.ends_call:
            program = program.with_keepalive(0 if state.goto else 2)
        limit = getattr(self.provider, "inline_limit", None)
        if limit is not None and len(self.provider.render(program, self.urls_for(s.call_id)).body) > limit:
            return None
        return program

    def _live(self, call_id: str) -> Session:
        if not call_id:
            raise InvalidParams("callId is required")
        s = self.sessions.get(call_id)
        if s is None:
            raise CallNotFound(f"no active call {call_id}", callId=call_id)
        return s

    async def _rpc(self, call_id: str, event: Event, *, needs_answer: bool = True) -> Session:
        s = self._live(call_id)
        if needs_answer and s.record.answered_at is None:
            raise CallNotConnected(f"call {call_id} is not connected yet ({s.record.state})", state=s.record.state)
        await self.engine.run(s, event, via_request=False)
        return s

    async def speak(self, call_id: str, message: str) -> None:
        if not (message or "").strip():
            raise InvalidParams("message is required")
        await self._rpc(call_id, Event("rpc.speak", {"text": message}, call_id))

    async def dtmf(self, call_id: str, digits: str) -> None:
        if not DTMF_RE.match(digits or ""):
            raise InvalidParams("digits may hold only 0-9, *, # and w (half-second wait)")
        await self._rpc(call_id, Event("rpc.dtmf", {"digits": digits}, call_id))

    async def continue_(self, call_id: str, message: str) -> str:
        """Say ``message``, then wait for the caller's answer to that turn."""
        from .errors import TurnInProgress, TurnTimeout

        s = self._live(call_id)
        if not (message or "").strip():
            raise InvalidParams("message is required")
        if s.waiter is not None:
            raise TurnInProgress(f"call {call_id} already has a turn waiting for the caller")
        waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        s.waiter = waiter
        try:
            await self._rpc(call_id, Event("rpc.continue", {"text": message}, call_id))
            timeout = int(self.settings.get("transcriptTimeoutMs", 180000)) / 1000
            sleeper = asyncio.ensure_future(self.clock.sleep(timeout))
            try:
                pending: set[asyncio.Future[Any]] = {waiter, sleeper}
                await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
            if not waiter.done():
                raise TurnTimeout(f"no answer from the caller within {timeout:g} s")
            return waiter.result()
        finally:
            if s.waiter is waiter:
                s.waiter = None

    async def end(self, call_id: str) -> None:
        s = self.sessions.get(call_id)
        if s is None:
            record = await self.store.get(call_id) if call_id else None
            if record is not None:
                raise CallEnded(f"call {call_id} already ended ({record.end_reason})", reason=record.end_reason)
            raise CallNotFound(f"no active call {call_id}", callId=call_id)
        async with s.lock:
            if s.flow and s.machine.handles(s.model.state, "rpc.end"):
                await self.engine.dispatch(s, Event("rpc.end", {}, call_id))
                s.outbox.clear()
            await self.engine.persist(s)
        await self.engine.end_call(s, "hangup-bot")

    async def status(self, call_id: str | None = None) -> dict[str, Any]:
        if not call_id:
            return {"calls": [s.record.to_public() for s in self.sessions.values()]}
        s = self.sessions.get(call_id)
        record = s.record if s else await self.store.get(call_id)
        if record is None:
            raise CallNotFound(f"no call {call_id}", callId=call_id)
        return record.to_public()

    async def wait_ended(self, call_id: str, timeout: float = 30.0) -> CallRecord:
        """Test and demo helper: poll until the call is terminal."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if call_id not in self.sessions:
                record = await self.store.get(call_id)
                if record is not None and record.terminal:
                    return record
            await asyncio.sleep(0.01)
        raise VoiceCallError(f"call {call_id} did not end within {timeout} s")
