"""VoiceCallRuntime: the sessions, the webhook entry point, the control verbs.

One runtime per store. ``start()`` opens the store, restores live calls and
their timers, starts the webhook listener (and, for the mock carrier, the
carrier itself on loopback); ``stop()`` drains and closes them.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from voicecall.providers.base import DOCUMENT_TYPES

from .clock import Clock, RealClock
from .engine import CallEngine
from .errors import (
    ProviderError,
)
from .events import Event
from .machine import CallModel, FlowMachine
from .program import Program, Step
from .record import CallRecord
from .session import Session, new_token
from .verbs import ControlVerbs

if TYPE_CHECKING:
    from voicecall.providers.base import CallUrls, Provider, Reply, WebhookRequest

    from .config import Settings
    from .flows import Flow, FlowLibrary
    from .responder import Responder
    from .store import RuntimeLock, Store

log = logging.getLogger("voicecall.runtime")

INBOUND_FLOW = "inbound_greeting"
SUPERVISOR_FLOW = "reaper"
DEFAULT_GREETING = "Hello! How can I help you today?"
MAINTENANCE_INTERVAL_S = 3600
# Twilio and Plivo signatures carry no timestamp: a replay is refused as long
# as its key is kept. Thirty days bounds the table and outlasts any carrier retry.
REPLAY_RETENTION_S = 30 * 86400
# Carrier REST statuses of a finished call, as engine end reasons.
CARRIER_ENDED = {"completed": "completed", "busy": "busy", "failed": "failed", "no-answer": "no-answer",
                 "canceled": "hangup-bot"}


class VoiceCallRuntime(ControlVerbs):
    """The whole engine in one asyncio process; embeddable in a host app."""

    def __init__(self, settings: Settings, *, clock: Clock | None = None, provider: Provider | None = None,
                 responder: Responder | None = None, flows: FlowLibrary | None = None,
                 provider_options: Mapping[str, Any] | None = None):
        self.settings = settings
        self.clock = clock or RealClock()
        self._provider = provider
        self._responder = responder
        self._flows = flows
        self._provider_options = dict(provider_options or {})
        self.sessions: dict[str, Session] = {}
        self._by_provider_id: dict[str, Session] = {}
        self._refused: set[str] = set()
        self._machines: dict[str, FlowMachine] = {}
        self._store: Store | None = None
        self._lock: RuntimeLock | None = None
        self._engine: CallEngine | None = None
        self._webhook: Any = None
        self._control: Any = None
        self.control_port: int | None = None
        self.mock_carrier: Any = None
        self.public_url: str = ""
        self.webhook_port: int | None = None

    # ------------------------------------------------------------ lifecycle

    @property
    def provider(self) -> Provider:
        assert self._provider is not None, "runtime not started"
        return self._provider

    @property
    def flows(self) -> FlowLibrary:
        if self._flows is None:
            from pathlib import Path

            from .flows import FlowLibrary

            self._flows = FlowLibrary([Path(p) for p in self.settings.get("flows.paths", ()) or ()])
        return self._flows

    @property
    def store(self) -> Store:
        assert self._store is not None, "runtime not started"
        return self._store

    @property
    def engine(self) -> CallEngine:
        assert self._engine is not None, "runtime not started"
        return self._engine

    async def start(self, *, webhook: bool = True, control: bool = False) -> None:
        from .responder import make_responder
        from .store import Store, acquire_runtime_lock

        store_dir = self.settings.store_dir
        store_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = acquire_runtime_lock(store_dir)
        try:
            self._store = await Store.open(store_dir)
            if webhook:
                from .server import WebhookServer

                self._webhook = WebhookServer(self)
                self.webhook_port = await self._webhook.start()
            if control:
                from .control import ControlServer

                self._control = ControlServer(self)
                self.control_port = await self._control.start()
            self.public_url = self._public_url()
            if self._provider is None:
                self._provider = await self._make_provider()
            self._responder = self._responder or make_responder(self.settings)
            self._engine = CallEngine(
                provider=self.provider, store=self.store, clock=self.clock, responder=self._responder,
                config=self.settings.template_context(), urls_for=self.urls_for, on_finished=self._finished,
            )
            await self._restore()
            self.engine.spawn(self._maintain(), "timer maintenance")
        except BaseException:
            await self.stop()
            raise
        # Everything alive now (modules, flows, restored calls) lives as long as
        # the runtime: keep it out of the cyclic GC, whose full passes over
        # thousands of calls otherwise stall every webhook (bench/: 120 ms at 10k).
        gc.collect()
        gc.freeze()

    async def _maintain(self) -> None:
        """Hourly: forget replay keys older than the retention window."""
        while True:
            await self.clock.sleep(MAINTENANCE_INTERVAL_S)
            pruned = await self.store.prune_replay(self.clock.now() - REPLAY_RETENTION_S)
            if pruned:
                log.info("pruned %d replay keys older than %d days", pruned, REPLAY_RETENTION_S // 86400)

    async def stop(self) -> None:
        """Stop taking webhooks, let in-flight work settle, persist, close."""
        if self._control is not None:
            await self._control.stop()
            self._control = None
        if self._webhook is not None:
            await self._webhook.stop()
            self._webhook = None
        if self._engine is not None:
            for s in list(self.sessions.values()):
                for task in s.timers.values():
                    task.cancel()
            pending = [t for t in self._engine.background if not t.get_name().startswith("timer ")]
            if pending:
                await asyncio.wait(pending, timeout=5)
            for task in list(self._engine.background):
                task.cancel()
            for s in list(self.sessions.values()):
                async with s.lock:
                    await self._engine.persist(s)
        if self._provider is not None:
            await self._provider.close()
        if self.mock_carrier is not None:
            await self.mock_carrier.stop()
            self.mock_carrier = None
        if self._responder is not None:
            await self._responder.close()
        if self._store is not None:
            await self._store.close()
            self._store = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    async def __aenter__(self) -> VoiceCallRuntime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _make_provider(self) -> Provider:
        from voicecall.providers.base import provider_class

        name = self.settings.provider
        options = dict(self._provider_options)
        if name == "mock" and "api_base_url" not in options:
            from voicecall.providers.mock import MockCarrier

            from .security import load_or_create_mock_secret

            self.mock_carrier = MockCarrier(secret=load_or_create_mock_secret(self.settings.store_dir),
                                            clock=self.clock)
            options["api_base_url"] = await self.mock_carrier.start()
        cls = provider_class(name)
        return cls(self.settings, store_dir=self.settings.store_dir, clock=self.clock, **options)

    def _public_url(self) -> str:
        configured = self.settings.get("publicUrl")
        if configured:
            return str(configured)
        bind = str(self.settings.get("serve.bind", "127.0.0.1"))
        host = "127.0.0.1" if bind in ("0.0.0.0", "::", "") else bind
        host = f"[{host}]" if ":" in host else host
        port = self.webhook_port or self.settings.get("serve.port", 3334)
        return f"http://{host}:{port}{self.settings.get('serve.path', '/voice/webhook')}"

    def urls_for(self, call_id: str) -> CallUrls:
        from voicecall.providers.base import CallUrls

        return CallUrls(self.public_url, call_id)

    # ------------------------------------------------------------ sessions

    def _machine(self, flow: Flow) -> FlowMachine:
        machine = self._machines.get(flow.hash)
        if machine is None:
            machine = self._machines[flow.hash] = FlowMachine(flow)
        return machine

    def _session(self, record: CallRecord, flow: Flow) -> Session:
        machine = self._machine(flow)
        s = Session(record, flow, machine, CallModel(record.state))
        if SUPERVISOR_FLOW in self.flows.names():
            sup = self.flows.get(SUPERVISOR_FLOW)
            s.supervisor = self._machine(sup)
            s.sup_model = CallModel(record.supervisor_state or sup.initial)
            record.supervisor_state = s.sup_model.state
        self.sessions[record.call_id] = s
        if record.provider_call_id:
            self._by_provider_id[record.provider_call_id] = s
        return s

    def _finished(self, s: Session) -> None:
        self.sessions.pop(s.call_id, None)
        if s.record.provider_call_id:
            self._by_provider_id.pop(s.record.provider_call_id, None)

    def _find(self, event: Event) -> Session | None:
        s = self.sessions.get(event.call_id or "")
        if s is None and event.provider_call_id:
            s = self._by_provider_id.get(event.provider_call_id)
        if s is not None and event.provider_call_id and event.provider_call_id != s.record.provider_call_id:
            # Plivo names a call by its request UUID until the call's own UUID is known.
            s.record.provider_call_id = event.provider_call_id
            self._by_provider_id[event.provider_call_id] = s
        return s

    async def _restore(self) -> None:
        """Bring back live calls and their timers; overdue timers fire first, in order."""
        from .errors import FlowError
        from .flows import load_flow_text

        by_hash: dict[str, Flow] = {}
        for record in await self.store.live_calls():
            flow = by_hash.get(record.flow_hash)
            if flow is None:
                stored = await self.store.get_flow(record.flow_hash)
                if stored is None:
                    log.error("call %s: its flow %s is not in the store; cannot restore", record.call_id, record.flow)
                    continue
                try:
                    flow = by_hash[record.flow_hash] = load_flow_text(stored[1], file=f"<stored {stored[0]}>")
                except FlowError as exc:
                    log.error("call %s: stored flow no longer loads: %s", record.call_id, exc)
                    continue
            s = self._session(record, flow)
            s.fetch_expected = True
            for timer in sorted(record.timers, key=lambda t: t.due):
                self.engine.schedule_timer(s, timer)
            log.info("restored call %s in state %s", record.call_id, record.state)
            self.engine.spawn(self._check_restored(s), f"check restored {record.call_id}")

    async def _check_restored(self, s: Session) -> None:
        """Ask the carrier whether a restored call still exists; end it if not."""
        from voicecall.providers.base import CallRef

        fetch = getattr(self.provider, "fetch_status", None)
        if fetch is None or not s.record.provider_call_id:
            return
        try:
            status = await fetch(CallRef(s.call_id, s.record.provider_call_id))
        except ProviderError as exc:
            if exc.status == 404:
                await self.engine.end_call(s, "completed")
            else:
                log.warning("call %s: could not check it with the carrier: %s", s.call_id, exc)
            return
        reason = CARRIER_ENDED.get(status)
        if reason is not None:
            log.info("call %s ended while we were down (%s)", s.call_id, status)
            await self.engine.run(s, Event("call.ended", {"reason": reason}, s.call_id), via_request=False)

    # ------------------------------------------------------------ webhooks

    async def handle_webhook(self, req: WebhookRequest, replay_key: str | None) -> Reply:
        """Run a verified carrier request through the engine; return the reply.

        ``replay_key`` is None for a replayed request: no side effects, but a
        live call still gets a harmless document, never an empty one.
        """
        # A carrier's first request for an inbound call goes to the bare public
        # URL (the operator configured it on the number): it wants a document.
        kind = req.q("type") or "voice"
        events = self.provider.parse(req)
        wants_document = kind in DOCUMENT_TYPES
        if replay_key is None:
            s = next((x for x in map(self._find, events) if x), self.sessions.get(req.q("callId") or ""))
            return self._idle_reply(s, req) if wants_document else self.provider.ack(req)
        session: Session | None = self.sessions.get(req.q("callId") or "")
        for event in events:
            s = self._find(event)
            # An inbound call begins with the carrier asking for its first
            # document; a status callback racing ahead of it creates nothing.
            if (s is None and event.type == "call.initiated" and event.data.get("direction") == "inbound"
                    and (wants_document or self.provider.style == "command")):
                refused = await self._inbound(event)
                if isinstance(refused, Program):
                    await self.store.commit(None, replay_key=replay_key)
                    if self.provider.style == "command":
                        await self._reject_by_command(event, refused)
                        return self.provider.ack(req)
                    return self.provider.render(refused, self.urls_for(event.call_id or ""))
                s = refused
                if self.provider.style == "document":
                    # Returning a document answers the call.
                    events_after = [Event("call.answered", {}, s.call_id, event.provider_call_id)]
                else:
                    events_after = []
                    self.engine.spawn(self._answer(s), f"answer {s.call_id}")
            else:
                events_after = []
            if s is None:
                log.info("webhook %s for an unknown call (%s): ignored", event.type,
                         event.call_id or event.provider_call_id)
                continue
            session = s
            async with s.lock:
                for e in (event, *events_after):
                    await self.engine.dispatch(s, e)
        if session is None:
            await self.store.commit(None, replay_key=replay_key)
            return self._idle_reply(None, req) if wants_document else self.provider.ack(req)
        async with session.lock:
            program = self.engine.take_program(session) if wants_document else None
            if not wants_document and session.outbox:
                pending = self.engine.take_program(session)
                if pending is not None:
                    self.engine._deliver_later(session, pending)
            session.changed = True
            await self.engine.persist(session, replay_key)
            if not wants_document:
                return self.provider.ack(req)
            if program is None:
                return self._idle_reply(session, req)
            self.engine.mark_delivered(session, program)
            return self.provider.render(program, self.urls_for(session.call_id))

    async def _reject_by_command(self, event: Event, program: Program) -> None:
        from voicecall.providers.base import CallRef

        ref = CallRef(event.call_id or "", event.provider_call_id)
        try:
            await self.engine.commands.execute(ref, program.steps[0], self.urls_for(ref.call_id), "reject")
        except ProviderError as exc:
            log.error("could not reject inbound call %s: %s", event.provider_call_id, exc)

    async def _answer(self, s: Session) -> None:
        from voicecall.providers.base import CallRef

        try:
            await self.engine.commands.answer(CallRef(s.call_id, s.record.provider_call_id), self.urls_for(s.call_id))
        except ProviderError as exc:
            log.error("call %s: could not answer: %s", s.call_id, exc)
            await self.engine.end_call(s, "failed")

    def _idle_reply(self, s: Session | None, req: WebhookRequest) -> Reply:
        """A document when nothing new is due: keep a live call alive, end a dead one."""
        if s is None or s.record.terminal:
            program = Program("ended", (Step("hangup", {}),))
            return self.provider.render(program, self.urls_for(s.call_id if s else req.q("callId") or ""))
        program = Program(s.record.state, (Step("keepalive", {"seconds": self.engine.keepalive_seconds(s)}),))
        self.engine.mark_delivered(s, program)
        return self.provider.render(program, self.urls_for(s.call_id))

    async def _inbound(self, event: Event) -> Session | Program:
        from .inbound import decide

        caller, dialed = event.data.get("from"), event.data.get("to")
        decision = decide(self.settings, caller, dialed)
        pid = event.provider_call_id or ""
        if not decision.accepted:
            if pid not in self._refused:
                self._refused.add(pid)
                await self.store.commit(None, audit={"kind": "inbound_refused", "at": self.clock.now(), "data": {
                    "providerCallId": pid, "from": caller, "to": dialed, "reason": decision.reason}})
                log.warning("refused inbound call from %s: %s", caller, decision.reason)
            return Program("refused", (Step("reject", {"reason": "rejected"}),))
        route = dict(decision.route or {})
        flow = self.flows.get(str(route.get("flow") or INBOUND_FLOW))
        greeting = route.get("inboundGreeting") or self.settings.get("inboundGreeting") or DEFAULT_GREETING
        record = self._new_record(flow, direction="inbound", from_number=decision.caller or str(caller),
                                  to_number=str(dialed or ""), message=str(greeting), vars_={})
        record.provider_call_id = pid or None
        if decision.route:
            record.route = str(dialed)
            record.route_settings = {k: route[k] for k in ("responseModel", "responseSystemPrompt") if route.get(k)}
        await self.store.put_flow(flow.hash, flow.name, flow.source)
        return self._session(record, flow)

    def _new_record(self, flow: Flow, *, direction: str, from_number: str, to_number: str,
                    message: str | None, vars_: Mapping[str, Any]) -> CallRecord:
        now = self.clock.now()
        return CallRecord(
            call_id=str(uuid.uuid4()), provider=self.settings.provider, direction=direction,  # type: ignore[arg-type]
            mode=flow.mode, flow=flow.name, state=flow.initial, from_number=from_number, to_number=to_number,
            started_at=now, flow_hash=flow.hash, message=message, vars=dict(vars_), last_activity_at=now,
            turn=new_token(), agent_id=self.settings.get("agentId"), session_scope=self.settings.get("sessionScope"),
        )
