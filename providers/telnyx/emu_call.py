"""One call inside the Telnyx emulator: ringing, answering, the media queue
(speak, playback, gather prompts play one after another, as on Telnyx), the
listening caller, and the end. Events go out through ``TelnyxEmulator.emit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from voicecall.providers.callee import Callee
from voicecall.providers.emulation import LogEntry

if TYPE_CHECKING:
    from voicecall.providers.telnyx.emulator import TelnyxEmulator

log = logging.getLogger("voicecall.providers.telnyx.emulator")

SECONDS_PER_WORD = 0.3
PLAYBACK_S = 2.0                 # an audio file's length: the emulator fetches nothing
AMD_S = 2.0                      # time answering-machine detection takes after the answer
RING_PATIENCE_S = 30.0           # an inbound caller waits this long for an answer
NEEDS = {"say": "speech", "digits": "dtmf"}


@dataclass(eq=False)
class EmuCall:
    ccid: str
    leg_id: str
    session_id: str
    direction: str                   # "outgoing" | "incoming"
    from_: str
    to: str
    connection_id: str
    webhook_url: str
    callee: Callee
    client_state: str | None = None
    timeout_secs: int = 30
    time_limit_secs: int = 14400
    amd: bool = False
    answered_by: str = "human"
    state: str = "ringing"           # ringing | answered | ended
    started_at: float = 0.0
    hangup_cause: str | None = None
    log: list[LogEntry] = field(default_factory=list)
    command_ids: set[str] = field(default_factory=set)
    media: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    transcription: str | None = None          # client_state of a running transcription
    gather: dict[str, Any] | None = None      # the running DTMF gather's body
    listen_pending: bool = False
    listening_changed: asyncio.Event = field(default_factory=asyncio.Event)
    listener: asyncio.Task[None] | None = None
    sender: asyncio.Task[None] | None = None
    pending_hangup: tuple[str, str] | None = None   # (hangup_cause, hangup_source)
    rng: random.Random | None = None
    held: list[tuple[str, bytes, str]] = field(default_factory=list)
    outbox: asyncio.Queue[tuple[str, bytes, str] | None] = field(default_factory=asyncio.Queue)

    @property
    def heard(self) -> list[str]:
        return [e.detail for e in self.log if e.kind == "heard"]

    @property
    def live(self) -> bool:
        return self.state != "ended"


class CallRunner:
    def __init__(self, emu: TelnyxEmulator, call: EmuCall):
        self.emu = emu
        self.call = call

    # -- ringing -----------------------------------------------------------------
    async def outbound(self) -> None:
        call, callee = self.call, self.call.callee
        await self.emu.emit(call, "call.initiated", direction="outgoing", state="bridging")
        if callee.ring == "busy":
            await self.emu.sleep(1.0)
            return self.end("user_busy", "callee")
        if callee.ring == "fail":
            await self.emu.sleep(0.5)
            return self.end("not_found", "unknown")
        if callee.ring == "no-answer" or callee.answer_after >= call.timeout_secs:
            await self.emu.sleep(call.timeout_secs)
            return self.end("timeout", "unknown")
        await self.emu.sleep(callee.answer_after)
        await self._answered()

    async def inbound(self) -> None:
        call = self.call
        await self.emu.emit(call, "call.initiated", direction="incoming", state="parked")
        ring = asyncio.ensure_future(call.answered.wait())
        patience = asyncio.ensure_future(self.emu.sleep(RING_PATIENCE_S))
        try:
            await asyncio.wait({ring, patience}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (ring, patience):
                task.cancel()
        if not call.answered.is_set():
            if call.live:
                self.end("originator_cancel", "caller")     # the caller gave up: nobody answered
            return
        await self._answered()

    async def _answered(self) -> None:
        call = self.call
        if not call.live:
            return
        call.state = "answered"
        call.answered.set()
        await self.emu.emit(call, "call.answered", state="answered")
        self.emu.spawn(call, self._time_limit())
        if call.amd:
            self.emu.spawn(call, self._detect())
        await self.worker()

    async def _time_limit(self) -> None:
        await self.emu.sleep(self.call.time_limit_secs)
        self.end("time_limit", "unknown")

    async def _detect(self) -> None:
        await self.emu.sleep(AMD_S)
        if self.call.live:
            result = {"human": "human", "machine": "machine"}.get(self.call.answered_by, "not_sure")
            await self.emu.emit(self.call, "call.machine.detection.ended", result=result)

    # -- media ----------------------------------------------------------------------
    async def worker(self) -> None:
        """Play queued media in order; when it runs dry and someone listens, let the caller react."""
        call = self.call
        while call.live:
            await call.wake.wait()
            call.wake.clear()
            while call.media and call.live:
                kind, body = call.media.pop(0)
                await self._play(kind, body)
            if call.live and call.listen_pending and (call.transcription or call.gather):
                call.listen_pending = False
                # One listener per turn; one already waiting sees the change through listening_changed.
                if call.listener is None or call.listener.done():
                    call.listener = self.emu.spawn(call, self._listen())

    async def _play(self, kind: str, body: dict[str, Any]) -> None:
        call = self.call
        state = body.get("client_state") or call.client_state
        # A plain "gather" has no prompt: listening starts at once (below).
        if kind in ("speak", "gather_using_speak"):
            text = str(body.get("payload", ""))
            call.log.append(LogEntry(self.emu.now(), "heard", text))
            duration = max(1, len(text.split())) * SECONDS_PER_WORD
            if kind == "speak":
                await self.emu.emit(call, "call.speak.started", client_state=state)
            if call.callee.hangs_up_during_say():
                await self.emu.sleep(duration / 2)
                return self.end("normal_clearing", self._far_side())
            await self.emu.sleep(duration)
            if kind == "speak" and call.live:
                await self.emu.emit(call, "call.speak.ended", client_state=state, status="completed")
        elif kind != "gather":
            url = str(body.get("audio_url", ""))
            call.log.append(LogEntry(self.emu.now(), "played", url))
            if kind == "playback_start":
                await self.emu.emit(call, "call.playback.started", client_state=state, media_url=url)
            loops = body.get("loop", 1)
            await self.emu.sleep(PLAYBACK_S * (loops if isinstance(loops, int) and loops > 0 else 1))
            if kind == "playback_start" and call.live:
                await self.emu.emit(call, "call.playback.ended", client_state=state, media_url=url,
                                    status="completed")
        if kind.startswith("gather") and call.live:
            call.gather = body
            call.listen_pending = True
            call.listening_changed.set()

    # -- the caller at an open gather or transcription --------------------------------
    async def _listen(self) -> None:
        """The caller's next scripted response to what is listening now.

        Commands sent together (a DTMF gather and a transcription for a speech-or-
        digits turn) reach the emulator one after the other: when the caller's next
        response needs an input that is not listening yet, they wait for it (while a
        running DTMF gather's time-out keeps counting), whatever the real timing.
        """
        call = self.call
        gather = call.gather
        timeout = int(gather.get("timeout_millis", 5000)) / 1000 if gather else None
        started = self.emu.now()
        while True:
            if gather is None and call.gather is not None:
                # A DTMF gather joined a running transcription: its time-out starts now.
                gather, started = call.gather, self.emu.now()
                timeout = int(gather.get("timeout_millis", 5000)) / 1000
            need = _needed(call.callee)
            if need is None or (need == "speech" and call.transcription) or (need == "dtmf" and call.gather):
                break
            call.listening_changed.clear()
            left = None if timeout is None else timeout - self._elapsed(started)
            if left is not None and left <= 0:
                return await self._gather_ended(gather, "timeout", "")
            if not await self._changed(left):
                return await self._gather_ended(gather, "timeout", "")
            if call.gather is not gather and call.gather is not None:
                return                       # a new gather took over; its own listener answers it
        inputs = " ".join(x for x, on in (("speech", call.transcription), ("dtmf", call.gather)) if on)
        if not inputs:
            return
        response = call.callee.at_gather(inputs)
        left = None if timeout is None else timeout - self._elapsed(started)
        if left is not None and (response.kind == "silence" or response.wait >= left):
            await self.emu.sleep(max(0.0, left))
            return await self._gather_ended(gather, "timeout", "")
        await self.emu.sleep(response.wait)
        if not call.live:
            return
        if response.kind == "hangup":
            return self.end("normal_clearing", self._far_side())
        if response.kind == "speech" and call.transcription:
            call.log.append(LogEntry(self.emu.now(), "said", response.value))
            await self.emu.emit(call, "call.transcription", client_state=call.transcription, transcription_data={
                "transcript": response.value, "confidence": 0.95, "is_final": True,
                "transcription_track": "inbound"})
        elif response.kind == "digits":
            call.log.append(LogEntry(self.emu.now(), "pressed", response.value))
            for digit in response.value:
                await self.emu.emit(call, "call.dtmf.received", digit=digit)
            if gather is not None:
                await self._gather_ended(gather, "valid", _collect(gather, response.value))

    def _elapsed(self, since: float) -> float:
        """Emulated seconds since ``since`` (clock time runs ``time_scale`` times faster)."""
        return (self.emu.now() - since) / self.emu.time_scale

    async def _changed(self, seconds: float | None) -> bool:
        """Wait until what listens changes (True) or ``seconds`` of emulated time pass (False)."""
        change = asyncio.ensure_future(self.call.listening_changed.wait())
        waits: set[asyncio.Future[Any]] = {change}
        if seconds is not None:
            waits.add(asyncio.ensure_future(self.emu.sleep(seconds)))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        return change.done() and not change.cancelled()

    async def _gather_ended(self, gather: dict[str, Any] | None, status: str, digits: str) -> None:
        call = self.call
        if gather is None or call.gather is not gather or not call.live:
            return
        call.gather = None
        await self.emu.emit(call, "call.gather.ended", client_state=gather.get("client_state") or call.client_state,
                            digits=digits, status=status)

    async def stop_gather(self) -> None:
        call = self.call
        gather = call.gather
        self.cancel_listener()
        await self._gather_ended(gather, "cancelled", "")

    def cancel_listener(self) -> None:
        if self.call.listener is not None and not self.call.listener.done() \
                and self.call.listener is not asyncio.current_task():
            self.call.listener.cancel()

    # -- the end ------------------------------------------------------------------------
    def end(self, cause: str, source: str) -> None:
        """End the call once: log it, send ``call.hangup``; ``finished`` once it is delivered."""
        call = self.call
        if not call.live:
            return
        call.state = "ended"
        call.hangup_cause = cause
        call.log.append(LogEntry(self.emu.now(), "ended", {"reason": cause}))
        call.wake.set()
        self.cancel_listener()
        self.emu.final(call, cause, source)

    def _far_side(self) -> str:
        return "callee" if self.call.direction == "outgoing" else "caller"


def _needed(callee: Callee) -> str | None:
    """The input the caller's next response needs (None: silence, hang-up, or no script left)."""
    for kind, _ in callee.steps:
        if kind != "wait":
            return NEEDS.get(kind)
    return None


def _collect(gather: dict[str, Any], pressed: str) -> str:
    """What a DTMF gather reports: up to the terminating digit, at most ``maximum_digits``."""
    end = str(gather.get("terminating_digit") or "#")
    digits = pressed.split(end, 1)[0] if end in pressed else pressed
    return digits[: int(gather.get("maximum_digits", 128))]


async def cancel_quietly(task: asyncio.Task[Any] | None) -> None:
    if task is None or task.done():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
