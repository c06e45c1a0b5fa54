"""How a flow drives a call (DESIGN §3.1): events in, states entered,
programs rendered and delivered, timers armed, the store written.

Nothing here names a state of a built-in flow: it branches on the flow's
structure (``final``, ``opening``, ``goto``) and on event types only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from .errors import NotAcceptedInState, ProviderError, RenderError
from .events import Event
from .program import CARRIER_STEPS, Program, Step
from .record import Timer
from .session import TURN_RESULTS, Session, new_token

if TYPE_CHECKING:
    from voicecall.providers.base import CallUrls, CommandProvider, Provider

    from .clock import Clock
    from .flows import State
    from .responder import Responder
    from .store import Store

log = logging.getLogger("voicecall.engine")

KEEPALIVE_SECONDS = 2
REPLY_KEEPALIVE_SECONDS = 4
HANGUP_CONFIRM_SECONDS = 30
MAX_GOTO_CHAIN = 16
APOLOGY = "Sorry, something went wrong on our side. Goodbye."
FLOW_TIMER = "flow:"
COMMAND_TIMER = "cmd:"
SUPERVISOR_TIMER = "sup:"


class CallEngine:
    """Runs events through sessions. The runtime owns sessions and I/O setup."""

    def __init__(self, *, provider: Provider, store: Store, clock: Clock, responder: Responder,
                 config: dict[str, Any], urls_for: Callable[[str], CallUrls],
                 on_finished: Callable[[Session], None]):
        self.provider = provider
        self.store = store
        self.clock = clock
        self.responder = responder
        self.config = config
        self.urls_for = urls_for
        self.on_finished = on_finished
        self.background: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------ events

    async def dispatch(self, s: Session, event: Event) -> bool:
        """Feed one event to the call's flow, then to its supervisor.

        Returns False when the event was dropped (late, duplicate, stale).
        Raises NotAcceptedInState for an ``rpc.*`` the current state ignores.
        """
        rec = s.record
        if rec.terminal:
            self._note(s, event, "ignored: call already ended")
            return False
        if event.rank:
            if event.rank <= rec.rank:
                self._note(s, event, "dropped: lifecycle already past this point")
                return False
            rec.rank = event.rank
        if event.type in TURN_RESULTS and event.token != rec.turn:
            self._note(s, event, "dropped: stale turn token")
            return False
        event = self._book(s, event)
        if event.type == "playback.done":
            self.playback_done(s, event.token)
        ctx = s.context(self.config, event.as_context())
        owner = event.data.get("timerOf")      # a timer fires only in the flow that armed it
        fired = None if owner == "supervisor" else await s.machine.fire(s.model, event.type, ctx)
        awaited = s.waiter is not None and event.type in TURN_RESULTS
        if event.type in TURN_RESULTS:
            rec.turn = new_token()
            if event.type != "gather.timeout":
                now = self.clock.now()
                s.turn_result_at = now
                if s.gather_sent_at is not None:
                    s.listen_wait_ms = round((now - s.gather_sent_at) * 1000, 1)
        if fired is None:
            if event.is_rpc:
                raise NotAcceptedInState(
                    f"{event.type[4:]} is not accepted while the call is {rec.state}", state=rec.state)
            # playback.done is the engine's own pacing signal (command carriers):
            # flows may react to it, but an unhandled one is not worth a log line.
            if owner != "supervisor" and event.type != "playback.done":
                self._note(s, event, f"not handled in state {rec.state}")
        else:
            self._note(s, event, f"{fired.source} -> {fired.dest}")
            actions = list(fired.transition.do) if fired.transition else []
            await self._enter(s, fired.dest, actions, event)
        if awaited and s.waiter and not s.waiter.done():
            s.waiter.set_result(str(event.data.get("text") or event.data.get("digits") or ""))
        if owner != "flow":
            moved = await self._supervise(s, event)
            if owner == "supervisor":
                self._note(s, event, f"supervisor {moved}" if moved else "not handled by the supervisor")
        s.changed = True
        return True

    def _book(self, s: Session, event: Event) -> Event:
        """Engine bookkeeping every flow gets for free."""
        rec, now = s.record, self.clock.now()
        if not event.type.startswith(("rpc.", "timer.", "reply.")):
            rec.last_activity_at = now
        if event.type == "call.answered" and rec.answered_at is None:
            rec.answered_at = now
            if rec.dtmf_sequence and not getattr(self.provider, "preconnect_dtmf", True):
                # This carrier cannot send digits on answer: they go first.
                s.outbox.append(Step("dtmf", {"digits": rec.dtmf_sequence}))
        elif event.type == "speech.final":
            rec.say("caller", str(event.data.get("text", "")), now)
            rec.turn_count += 1
        elif event.type == "dtmf":
            rec.say("caller", str(event.data.get("digits", "")), now)
            rec.turn_count += 1
        elif event.type == "call.ended":
            reason = self._end_reason(s, str(event.data.get("reason") or "completed"))
            event = Event(event.type, {**event.data, "reason": reason}, event.call_id,
                          event.provider_call_id, event.token, event.key, event.seq)
        return event

    @staticmethod
    def _end_reason(s: Session, reason: str) -> str:
        if s.pending_end_reason and reason in ("completed", "hangup-bot"):
            return s.pending_end_reason
        if reason == "completed" and s.bot_hangup:
            return "hangup-bot"
        if reason == "completed" and s.record.answered_at is not None:
            return "hangup-user"
        return reason

    # ------------------------------------------------------------ states

    async def _enter(self, s: Session, dest: str, actions: list[Any], event: Event | None, depth: int = 0) -> None:
        state = s.flow.states[dest]
        s.model.state = dest
        s.record.state = dest
        actions = [*actions, *state.do]
        ctx = s.context(self.config, event.as_context() if event else None, dest)
        try:
            from .flows import render_actions

            steps = render_actions(actions, ctx)
        except RenderError as exc:
            log.error("call %s: render error entering %s: %s", s.call_id, dest, exc)
            self._fail_render(s)
            return
        s.cancel_timers(FLOW_TIMER)
        self._arm(s, FLOW_TIMER, state, ctx)
        skip_carrier = state.opening and s.opening_sent
        if state.opening:
            s.opening_sent = False
        goto = self._run_steps(s, steps, deliver=not skip_carrier)
        if state.final:
            self._finish(s, dest, event)
            return
        target = goto or state.goto
        if target:
            if depth >= MAX_GOTO_CHAIN:
                log.error("call %s: %d gotos in a row without waiting (a loop?)", s.call_id, depth)
                self._fail_render(s)
                return
            await self._enter(s, target, [], event, depth + 1)

    def _run_steps(self, s: Session, steps: list[Step], *, deliver: bool) -> str | None:
        """Engine steps run here; carrier steps go to the outbox. Returns a goto target."""
        goto = None
        for step in steps:
            kind = step.kind
            if kind == "say":
                s.record.say("bot", str(step.params.get("text", "")), self.clock.now())
            elif kind == "gather":
                for inner in step.params.get("prompt", ()):
                    if inner.kind == "say":
                        s.record.say("bot", str(inner.params.get("text", "")), self.clock.now())
                step = Step("gather", {**step.params, "token": s.record.turn})
            if kind == "set":
                s.record.vars.update(step.params)
            elif kind == "reply":
                self._start_reply(s)
            elif kind == "end_call":
                self.end_call(s, str(step.params.get("reason") or "hangup-bot"))
            elif kind in ("goto", "redirect") and "state" in step.params:
                goto = str(step.params["state"])
            elif kind in CARRIER_STEPS:
                if kind in ("hangup", "reject"):
                    s.bot_hangup = True
                if deliver:
                    s.outbox.append(step)
        return goto

    def _finish(self, s: Session, state: str, event: Event | None) -> None:
        rec = s.record
        rec.state = state
        rec.ended_at = self.clock.now()
        reason = event.data.get("reason") if event and event.type == "call.ended" else None
        rec.end_reason = str(reason or s.pending_end_reason or state)
        s.cancel_all()
        if s.waiter and not s.waiter.done():
            from .errors import CallEnded

            s.waiter.set_exception(CallEnded("the call ended before the caller answered", reason=rec.end_reason))
        self.on_finished(s)

    def _fail_render(self, s: Session) -> None:
        """Apologise, hang up, end in ``error``: the carrier never gets a 500."""
        s.outbox[:] = [Step("say", {"text": APOLOGY}), Step("hangup", {})]
        s.bot_hangup = True
        s.pending_end_reason = "error"
        s.record.say("bot", APOLOGY, self.clock.now())
        self._finish(s, "error", None)

    async def _supervise(self, s: Session, event: Event) -> str | None:
        """Feed the event to the supervisor flow; returns "a -> b" when it moved."""
        if s.supervisor is None or s.sup_model is None or (s.record.terminal and event.type != "call.ended"):
            return None
        ctx = s.context(self.config, event.as_context(), s.sup_model.state)
        fired = await s.supervisor.fire(s.sup_model, event.type, ctx)
        moved = f"{fired.source} -> {fired.dest}" if fired else None
        while fired is not None:
            state = s.supervisor.flow.states[fired.dest]
            s.record.supervisor_state = fired.dest
            actions = [*(fired.transition.do if fired.transition else ()), *state.do]
            from .flows import render_actions

            steps = render_actions(actions, {**ctx, "state": fired.dest})
            s.cancel_timers(SUPERVISOR_TIMER)
            if not s.record.terminal:
                self._arm(s, SUPERVISOR_TIMER, state, ctx)
            goto = self._run_steps(s, [st for st in steps if st.kind not in CARRIER_STEPS], deliver=False)
            fired = await s.supervisor.goto(s.sup_model) if (goto or state.goto) else None
        return moved

    # ------------------------------------------------------------ timers

    def _arm(self, s: Session, prefix: str, state: State, ctx: dict[str, Any]) -> None:
        from .flows import timer_seconds

        now = self.clock.now()
        for spec in state.after:
            seconds = timer_seconds(spec, ctx)
            if seconds <= 0:
                continue
            timer = Timer(prefix + spec.event, now + seconds)
            s.record.timers.append(timer)
            self.schedule_timer(s, timer)

    def schedule_timer(self, s: Session, timer: Timer) -> None:
        async def fire() -> None:
            await self.clock.sleep(timer.due - self.clock.now())
            s.timers.pop(timer.name, None)
            s.record.timers = [t for t in s.record.timers if t is not timer]
            name = timer.name.partition(":")[2]
            owner = "supervisor" if timer.name.startswith(SUPERVISOR_TIMER) else "flow"
            await self.run(s, Event("timer." + name, {"timerOf": owner}), via_request=False)

        if old := s.timers.pop(timer.name, None):
            old.cancel()
        s.timers[timer.name] = self.spawn(fire(), f"timer {timer.name} for {s.call_id}")

    # ------------------------------------------------------------ delivery

    async def run(self, s: Session, event: Event, *, via_request: bool) -> Program | None:
        """Dispatch under the call's lock; deliver and persist what it produced.

        With ``via_request`` the program is returned for the HTTP reply;
        otherwise it is pushed to the carrier (or left for its next fetch).
        """
        async with s.lock:
            await self.dispatch(s, event)
            program = self.take_program(s)
            if program is not None and not via_request:
                self._deliver_later(s, program)
                program = None
            await self.persist(s)
            return program

    def take_program(self, s: Session) -> Program | None:
        if not s.outbox:
            return None
        program = Program(s.record.state, tuple(s.outbox))
        s.outbox.clear()
        if not s.record.terminal and not program.ends_call:
            program = program.with_keepalive(self.keepalive_seconds(s))
        return program

    def keepalive_seconds(self, s: Session) -> int:
        # While the responder works, its answer is pushed the moment it is
        # ready; the keep-alive is only the fallback if that push fails.
        return REPLY_KEEPALIVE_SECONDS if s.reply_task and not s.reply_task.done() else KEEPALIVE_SECONDS

    def mark_delivered(self, s: Session, program: Program) -> None:
        # Interrupting a carrier that is only waiting (a bare keep-alive) is
        # harmless; one that is still speaking will fetch the next program.
        last = program.steps[-1].kind if program.steps else ""
        speaking = any(st.kind in ("say", "play", "dtmf") for st in program.steps)
        s.fetch_expected = last in ("keepalive", "redirect") and speaking
        if last != "keepalive" or speaking:
            self._measure_turn(s, program)

    def _measure_turn(self, s: Session, program: Program) -> None:
        """Turn latency: a caller's final words in, our next instruction out."""
        now = self.clock.now()
        if s.turn_result_at is not None:
            latency = round((now - s.turn_result_at) * 1000, 1)
            s.record.metrics["lastTurnLatencyMs"] = latency
            s.record.metrics["lastListenWaitMs"] = s.listen_wait_ms
            s.log.append({"at": now, "type": "metrics.turn",
                          "data": {"turnLatencyMs": latency, "listenWaitMs": s.listen_wait_ms}})
            s.turn_result_at = None
            s.changed = True
        if any(st.kind == "gather" for st in program.steps):
            s.gather_sent_at = now

    def _deliver_later(self, s: Session, program: Program) -> None:
        if self.provider.style == "command":
            if s.record.answered_at is None and not program.ends_call:
                s.outbox[:0] = [st for st in program.steps if st.kind != "keepalive"]
                return
            self.run_commands(s, program)
            return
        if s.fetch_expected or s.record.answered_at is None:
            s.outbox[:0] = [st for st in program.steps if st.kind != "keepalive"]
            return
        if getattr(self.provider, "push_fetches", False):
            # The carrier's live update points the call at our resume URL;
            # the program is served on that fetch.
            s.outbox[:0] = [st for st in program.steps if st.kind != "keepalive"]
            s.fetch_expected = True
        else:
            self.mark_delivered(s, program)
        self.spawn(self._push(s, program), f"push to {s.call_id}")

    # ------------------------------------------------------------ command carriers

    def run_commands(self, s: Session, program: Program) -> None:
        """Replace what the call still had to do with ``program``, step by step."""
        s.command_gen += 1
        s.commands = [st for st in program.steps if st.kind != "keepalive"]
        s.command_tag = None
        s.cancel_timers(COMMAND_TIMER)
        self._measure_turn(s, program)
        self.spawn(self._advance(s, s.command_gen), f"commands for {s.call_id}")

    def playback_done(self, s: Session, tag: str | None) -> None:
        if tag is not None and tag == s.command_tag:
            s.command_tag = None
            self.spawn(self._advance(s, s.command_gen), f"commands for {s.call_id}")

    async def _advance(self, s: Session, generation: int) -> None:
        from voicecall.providers.base import CallRef

        urls = self.urls_for(s.call_id)
        while s.commands and s.command_gen == generation and not s.record.terminal:
            step = s.commands.pop(0)
            if step.kind == "pause":
                await self.clock.sleep(float(step.params.get("seconds", 0)))
                continue
            tag = new_token()
            if step.kind in ("say", "play"):
                s.command_tag = tag
            try:
                await self.commands.execute(CallRef(s.call_id, s.record.provider_call_id), step, urls, tag)
            except ProviderError as exc:
                log.error("call %s: carrier refused %s: %s", s.call_id, step.kind, exc)
                s.command_tag = None
                continue
            if step.kind in ("say", "play"):
                return                       # playback.done with this tag resumes us
            if step.kind == "gather":
                self._arm_gather_timeout(s, step)
                return
            if step.kind in ("hangup", "reject"):
                return

    @property
    def commands(self) -> CommandProvider:
        """The provider as a command carrier (only meaningful when its style is "command")."""
        return cast("CommandProvider", self.provider)

    def _arm_gather_timeout(self, s: Session, step: Step) -> None:
        """Speech is transcribed continuously: the engine decides when the turn timed out."""
        if "speech" not in str(step.params.get("input", "")):
            return
        token, seconds = step.params.get("token"), float(step.params.get("timeout", 5))

        async def expire() -> None:
            await self.clock.sleep(seconds)
            s.timers.pop(COMMAND_TIMER + "gather", None)
            await self.run(s, Event("gather.timeout", {}, s.call_id, token=token), via_request=False)

        s.timers[COMMAND_TIMER + "gather"] = self.spawn(expire(), f"timer gather for {s.call_id}")

    async def _push(self, s: Session, program: Program) -> None:
        from voicecall.providers.base import CallRef

        try:
            await self.provider.push(CallRef(s.call_id, s.record.provider_call_id), program, self.urls_for(s.call_id))
        except ProviderError as exc:
            log.error("call %s: could not update the live call: %s; it waits for the next fetch", s.call_id, exc)
            async with s.lock:
                s.outbox[:0] = [st for st in program.steps if st.kind != "keepalive"]
                s.fetch_expected = True

    def end_call(self, s: Session, reason: str) -> Awaitable[None]:
        """Hang up through the carrier's REST API; the carrier's ended event finishes the call."""
        from voicecall.providers.base import CallRef

        s.pending_end_reason = reason
        s.bot_hangup = True

        async def finish_here(why: str) -> None:
            async with s.lock:
                if not s.record.terminal:
                    log.warning("call %s: %s; ending it here as %s", s.call_id, why, reason)
                    self._finish(s, reason, None)
                    s.changed = True
                    await self.persist(s)

        async def hang_up() -> None:
            if s.record.provider_call_id is None:
                return await finish_here("never reached the carrier")
            try:
                known = await self.provider.hangup(CallRef(s.call_id, s.record.provider_call_id))
            except ProviderError as exc:
                return await finish_here(f"hang-up failed: {exc}")
            if known is False:
                return await finish_here("the carrier no longer knows the call")
            self.spawn(confirm(), f"timer hangup-confirm {s.call_id}")

        async def confirm() -> None:
            # Nothing may stay live that no carrier reports on.
            await self.clock.sleep(HANGUP_CONFIRM_SECONDS)
            await finish_here(f"no end reported {HANGUP_CONFIRM_SECONDS} s after our hang-up")

        return self.spawn(hang_up(), f"hang up {s.call_id}")

    # ------------------------------------------------------------ responder

    def _start_reply(self, s: Session) -> None:
        from .responder import ReplyRequest, Turn

        rec = s.record
        request = ReplyRequest(
            call_id=rec.call_id, from_number=rec.from_number, to_number=rec.to_number,
            direction=rec.direction, transcript=tuple(Turn(t.role, t.text) for t in rec.transcript),
            system_prompt=rec.route_settings.get("responseSystemPrompt"), model=rec.route_settings.get("responseModel"),
            agent_id=rec.agent_id, session_key=rec.session_scope,
        )

        async def ask() -> None:
            from .responder import ResponderError

            started = self.clock.now()
            try:
                text = await self.responder.reply(request)
                event = Event("reply.ready", {"text": text})
            except ResponderError as exc:
                log.warning("call %s: responder failed: %s", rec.call_id, exc)
                event = Event("reply.failed", {"error": str(exc)})
            rec.metrics["lastReplyMs"] = round((self.clock.now() - started) * 1000, 1)
            await self.run(s, event, via_request=False)

        s.reply_task = self.spawn(ask(), f"reply for {rec.call_id}")

    # ------------------------------------------------------------ plumbing

    async def persist(self, s: Session, replay_key: str | None = None) -> None:
        if not s.changed and replay_key is None:
            return
        events, s.log = s.log, []
        s.changed = False
        await self.store.commit(s.record, events=events, replay_key=replay_key)

    def _note(self, s: Session, event: Event, outcome: str) -> None:
        log.debug("call %s: %s %s", s.call_id, event.type, outcome)
        s.log.append({"at": self.clock.now(), "type": event.type,
                      "data": {**event.data, "outcome": outcome, "state": s.record.state}})
        s.changed = True

    def spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self.background.add(task)
        task.add_done_callback(self._reap)
        return task

    def _reap(self, task: asyncio.Task[Any]) -> None:
        self.background.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("background task %s failed", task.get_name(), exc_info=exc)
