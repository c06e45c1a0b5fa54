"""TelnyxProvider: a command carrier (ARCHITECTURE "Carrier styles").

Webhooks are JSON events that only need an acknowledgement; the engine runs
each program step by step through ``execute``, and answers inbound calls
with ``answer``. Listening is stateful on Telnyx (a transcription or a DTMF
gather keeps running until stopped), so the provider remembers, per call,
what it left listening and stops it before the next step: a caller's words
after their turn never land in the next one.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any, Literal

from voicecall.engine.clock import Clock, RealClock
from voicecall.engine.errors import ProviderError, RenderError
from voicecall.engine.events import Event
from voicecall.engine.program import Program, Step
from voicecall.providers.base import CallRef, CallUrls, PlaceRequest, Reply, WebhookRequest
from voicecall.providers.common import clamp, settings_voice
from voicecall.providers.telnyx import commands as cmd
from voicecall.providers.telnyx import parse as parse_mod
from voicecall.providers.telnyx import signature
from voicecall.providers.telnyx.client import CALL_ENDED_CODE, TelnyxRest
from voicecall.providers.telnyx.parse import encode_state

log = logging.getLogger("voicecall.providers.telnyx")

RING_TIMEOUT_RANGE = (5, 600)        # dial timeout_secs
TIME_LIMIT_RANGE = (30, 14400)       # dial time_limit_secs (default 14400: four hours)
JSON = "application/json"
PROMPT_SLACK_S = 10.0                # beyond ~1 s a word, before a gather stops waiting for its prompt
PLAYBACK_LIMIT_S = 120.0             # an audio prompt's length is unknown


class TelnyxProvider:
    name = "telnyx"
    style: Literal["document", "command"] = "command"
    # Telnyx dial has no send-digits field: the engine sends dtmfSequence as the first step.
    preconnect_dtmf = False
    capabilities = frozenset({"say", "play", "pause", "gather.speech", "gather.dtmf", "dtmf", "reject", "amd"})
    signature_headers = signature.SIGNATURE_HEADERS
    inline_limit = 0                  # nothing rides with the dial: commands follow call.answered

    def __init__(self, settings: Any, *, store_dir: Path | None = None, clock: Clock | None = None,
                 api_base_url: str | None = None, timeout_s: float = 10.0):
        """``api_base_url`` overrides ``telnyx.apiBaseUrl`` (tests, the demo)."""
        self._settings = settings
        self._clock: Clock = clock or RealClock()
        self._public_key = str(settings.get("telnyx.publicKey") or "")
        self._connection_id = str(settings.get("telnyx.connectionId") or "")
        self._from = settings.get("fromNumber")
        self._time_limit = settings.get("maxDurationSeconds")
        self._voice = settings_voice(settings)
        self.rest = TelnyxRest(str(settings.get("telnyx.apiKey") or ""),
                               api_base_url=api_base_url or settings.get("telnyx.apiBaseUrl"),
                               timeout_s=timeout_s, sleep=self._clock.sleep)
        # call_control_id → what is still listening there ("transcription", "gather").
        self._listening: dict[str, set[str]] = {}
        # (call_control_id, turn token) → set when that gather's prompt has finished playing.
        self._prompts: dict[tuple[str, str], asyncio.Event] = {}
        self._turns: dict[str, int] = {}   # call_control_id → steps executed (newest wins)

    # -- webhooks (pure) ---------------------------------------------------

    def verify(self, req: WebhookRequest) -> str:
        return signature.verify(self._public_key, req, self._clock.now())

    def parse(self, req: WebhookRequest) -> list[Event]:
        """Neutral events. The end of a gather's prompt is the provider's own business
        (``execute`` starts listening then): it wakes that wait and goes no further."""
        events = parse_mod.parse(req)
        for event in events:
            if event.type == "playback.done" and event.data.get("prompt"):
                waiter = self._prompts.get((event.provider_call_id or "", event.token or ""))
                if waiter is not None:
                    waiter.set()
            elif event.type == "call.ended":
                self._forget(event.provider_call_id or "")
        return [e for e in events if not (e.type == "playback.done" and e.data.get("prompt"))]

    def render(self, program: Program, urls: CallUrls) -> Reply:
        """The commands ``program`` would issue, as JSON (snapshots; Telnyx never fetches documents).
        A ``pause`` shows as ``{"wait": seconds}``: the engine's timer, not a command."""
        out: list[dict[str, Any]] = []
        for index, step in enumerate(program.steps):
            if step.kind == "pause":
                out.append({"wait": int(step.params.get("seconds", 0) or 0)})
                continue
            out.extend(c.as_json() for c in cmd.step_commands(step, urls.call_id, f"step{index}", self._voice))
        return Reply(json.dumps(out, sort_keys=True, separators=(",", ":")).encode(), JSON)

    def ack(self, req: WebhookRequest) -> Reply:
        return Reply(b"{}", JSON)

    # -- REST ----------------------------------------------------------------

    async def place(self, call: PlaceRequest) -> str:
        from_number = call.from_number or self._from
        if not from_number:
            raise ProviderError("fromNumber is required to place a Telnyx call", provider="telnyx")
        if not self._connection_id:
            raise ProviderError("telnyx.connectionId is required to place a call", provider="telnyx")
        time_limit = call.time_limit_s or self._time_limit
        body = cmd.dial_body(
            connection_id=self._connection_id, to=call.to_number, from_=str(from_number),
            webhook_url=call.urls.webhook("event"), client_state=encode_state(call.call_id),
            timeout_secs=clamp("Telnyx", "ring timeout", call.ring_timeout_s, *RING_TIMEOUT_RANGE),
            time_limit_secs=(clamp("Telnyx", "maxDurationSeconds", int(time_limit), *TIME_LIMIT_RANGE)
                             if time_limit else None),
            machine_detection=call.machine_detection)
        data = await self.rest.dial(body)
        return str(data["call_control_id"])

    async def answer(self, call: CallRef, urls: CallUrls) -> None:
        """Answer an inbound call; later events go to our ``type=event`` URL with our call id."""
        ccid = _ccid(call)
        body = cmd.render_body("answer", client_state=encode_state(call.call_id), webhook_url=urls.webhook("event"))
        await self.rest.command(ccid, "answer", body)

    async def execute(self, call: CallRef, step: Step, urls: CallUrls, tag: str) -> None:
        """Send the command(s) for one step. ``say``/``play`` report ``playback.done``
        with ``tag``; a gather's result arrives with its turn token."""
        ccid = _ccid(call)
        try:
            commands = cmd.step_commands(step, call.call_id, tag, self._voice)
        except RenderError as exc:
            raise ProviderError(f"call {call.call_id}: {exc}", provider="telnyx") from None
        # Steps of a call run one after another; a newer program may start one while an
        # older gather still waits for its prompt. That older gather then stays silent.
        turn = self._turns[ccid] = self._turns.get(ccid, 0) + 1
        if step.kind in ("hangup", "reject"):
            self._forget(ccid)
        else:
            await self._stop_listening(ccid, call.call_id)
        token = str(step.params.get("token") or "")
        for command in commands:
            if self._turns.get(ccid, turn) != turn:
                log.info("call %s: a newer step replaced this gather before it listened", call.call_id)
                return
            waiter = self._prompts.setdefault((ccid, token), asyncio.Event()) if command.then_wait else None
            try:
                await self.rest.command(ccid, command.name, command.body)
                if waiter is not None:
                    await self._prompt_end(waiter, command, call.call_id)
            except ProviderError as exc:
                if _already_ended(exc):
                    # The caller hung up while we were sending: call.hangup is on its way.
                    log.info("call %s: %s not sent, the call has already ended", call.call_id, command.name)
                    self._listening.pop(ccid, None)
                    return
                raise
            finally:
                if waiter is not None:
                    self._prompts.pop((ccid, token), None)
            if command.name == "transcription_start":
                self._listening.setdefault(ccid, set()).add("transcription")
            elif command.name.startswith("gather"):
                self._listening.setdefault(ccid, set()).add("gather")

    async def _prompt_end(self, waiter: asyncio.Event, command: cmd.Command, call_id: str) -> None:
        """Wait for the prompt's ``call.speak.ended``/``call.playback.ended`` — at most
        about as long as it can take — so the gather's time-out starts after it."""
        words = len(str(command.body.get("payload", "")).split())
        limit = PROMPT_SLACK_S + (words * 1.0 if command.name == "speak" else PLAYBACK_LIMIT_S)
        ended = asyncio.ensure_future(waiter.wait())
        timer = asyncio.ensure_future(self._clock.sleep(limit))
        try:
            await asyncio.wait({ended, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
            timer.cancel()
        if not waiter.is_set():
            log.warning("call %s: no end of the gather prompt within %.0f s; listening anyway", call_id, limit)

    def _forget(self, ccid: str) -> None:
        """The call is ending: nothing listens any more, and no prompt wait holds a step."""
        self._listening.pop(ccid, None)
        self._turns.pop(ccid, None)
        for (waiting_ccid, _), waiter in list(self._prompts.items()):
            if waiting_ccid == ccid:
                waiter.set()

    async def _stop_listening(self, ccid: str, call_id: str) -> None:
        """Stop what the last gather left running. Telnyx may already have stopped it
        (a gather ends on its own): a refusal then is harmless."""
        for what in sorted(self._listening.pop(ccid, set())):
            name = "transcription_stop" if what == "transcription" else "gather_stop"
            try:
                await self.rest.command(ccid, name, cmd.render_body(name, client_state=encode_state(call_id)))
            except ProviderError as exc:
                if exc.status is None or exc.status >= 500:
                    raise
                log.debug("call %s: %s refused (%s): nothing was running", call_id, name, exc)

    async def push(self, call: CallRef, program: Program, urls: CallUrls) -> None:
        raise ProviderError("Telnyx is a command carrier: programs run step by step through "
                            "execute(), not pushed as documents", provider="telnyx")

    async def hangup(self, call: CallRef) -> bool:
        """True when Telnyx will send ``call.hangup``; False when it no longer knows the
        call (404, or 422 "call has already ended") or it was never placed."""
        if not call.provider_call_id:
            return False
        ccid = call.provider_call_id
        self._forget(ccid)
        try:
            await self.rest.command(ccid, "hangup", cmd.render_body("hangup", client_state=encode_state(call.call_id)))
        except ProviderError as exc:
            if exc.status == 404 or _already_ended(exc):
                log.info("Telnyx call %s is already gone: nothing to hang up", ccid)
                return False
            raise
        return True

    async def close(self) -> None:
        await self.rest.close()
        await asyncio.sleep(0)


def _ccid(call: CallRef) -> str:
    if not call.provider_call_id:
        raise ProviderError(f"call {call.call_id} has no Telnyx call_control_id yet", provider="telnyx")
    return call.provider_call_id


def _already_ended(exc: ProviderError) -> bool:
    """422 "Call has already ended" (90018): Telnyx no longer runs commands on the call."""
    return exc.status == 422 and (exc.carrier_code == CALL_ENDED_CODE or "already ended" in str(exc).lower())



