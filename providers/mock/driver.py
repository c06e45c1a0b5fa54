"""One mock call from dialling to hang-up: ring, answer, run documents.

Timing follows the injected clock (scaled by the carrier's ``time_scale``):
``say`` takes 0.3 s a word (at least 0.5 s), ``play`` 2 s a loop, ``pause`` its
seconds, a silent gather its ``timeout``. A document that runs out hangs the
call up, as every document carrier does.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from voicecall.providers.callee import ScriptError
from voicecall.providers.mock.calls import CarrierFault, End, MockCall, check_document

if TYPE_CHECKING:
    from voicecall.providers.mock.carrier import MockCarrier

CONFIDENCE = 0.93
AMD_SECONDS = 2.0
FALLTHROUGH = object()                       # a gather that got no input


def say_seconds(text: str) -> float:
    return max(0.5, 0.3 * len(text.split()))


class CallDriver:
    def __init__(self, carrier: MockCarrier, call: MockCall):
        self.carrier = carrier
        self.call = call
        self.callee = call.callee
        self.limit: asyncio.Future[None] | None = None     # the time limit, armed at answer

    async def outbound(self) -> None:
        try:
            await self._outbound()
        finally:
            self._disarm()

    async def inbound(self) -> None:
        try:
            await self._inbound()
        finally:
            self._disarm()

    def _disarm(self) -> None:
        if self.limit is not None and not self.limit.done():
            self.limit.cancel()

    async def _outbound(self) -> None:
        call, callee = self.call, self.callee
        await self.carrier.send_status(call, "initiated", status="initiated")
        if callee.ring == "fail":
            return await self.carrier.finish(call, "failed")
        await self.carrier.send_status(call, "ringing", status="ringing")
        if callee.ring == "busy":
            await self.carrier.sleep(1.0)
            return await self.carrier.finish(call, "busy")
        if callee.ring == "no-answer" or callee.answer_after >= call.ring_timeout:
            await self.carrier.sleep(call.ring_timeout)
            return await self.carrier.finish(call, "no-answer")
        await self.carrier.sleep(callee.answer_after)
        self._answered()
        await self.carrier.send_status(call, "answered")
        if call.machine_callback:
            # Detection listens to the first seconds of the line before the document runs.
            await self.carrier.sleep(AMD_SECONDS)
            self.carrier.note(call, "machine", call.answered_by)
            await self.carrier.notify(call, call.machine_callback, "machine", answeredBy=call.answered_by)
        if call.send_digits:
            # Pre-connect digits go out after the answer, before the first words (DESIGN §8).
            self.carrier.note(call, "dtmf", call.send_digits)
            await self.carrier.sleep(0.5 * call.send_digits.lower().count("w") + 0.1 * len(call.send_digits))
        await self._run_with_faults(self._opening_and_converse)

    async def _inbound(self) -> None:
        call = self.call
        call.status = "ringing"

        async def run() -> None:
            doc = await self.carrier.fetch(call, call.url or "", "inbound", source="voice")
            commands = check_document(doc)
            if commands and commands[0][0] == "reject":
                # A refused call is never answered and never hears a word.
                return await self.carrier.finish(call, _reject_reason(commands[0][1]))
            self._answered()
            await self._converse(doc)

        await self._run_with_faults(run)

    def _answered(self) -> None:
        self.call.status = "in-progress"
        self.call.answered_at = self.carrier.clock.now()
        if self.call.time_limit:
            # Counted from the answer, like TimeLimit: the call ends wherever it is then.
            self.limit = asyncio.ensure_future(self.carrier.sleep(self.call.time_limit))

    async def _opening_and_converse(self) -> None:
        call = self.call
        if call.document is not None:
            self.carrier.note(call, "document", {"source": "inline", "commands": call.document.get("commands")})
            doc: Any = call.document
        else:
            doc = await self.carrier.fetch(call, call.url or "", "answered", source="voice")
        await self._converse(doc)

    async def _run_with_faults(self, body: Any) -> None:
        try:
            await body()
        except CarrierFault as exc:
            self.carrier.note(self.call, "error", str(exc))
            await self.carrier.finish(self.call, "failed")
        except ScriptError as exc:
            self.carrier.note(self.call, "error", f"callee script: {exc}")
            await self.carrier.finish(self.call, "failed")

    async def _converse(self, doc: Any) -> None:
        """Run documents until one ends the call; a pushed document interrupts at once,
        the time limit ends the call wherever it is."""
        call, limit = self.call, self.limit
        reason = "completed"
        runner: asyncio.Future[Any] | None = None
        pushed: asyncio.Future[Any] | None = None
        try:
            while doc is not None:
                runner = asyncio.ensure_future(self._document(doc))
                pushed = asyncio.ensure_future(call.pushes.get())
                waiting = {runner, pushed} | ({limit} if limit else set())
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if runner not in done:
                    runner.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await runner
                if pushed not in done:
                    pushed.cancel()
                if limit is not None and limit in done:
                    self.carrier.note(call, "time-limit", call.time_limit)
                    break
                outcome = runner.result() if runner in done else None
                if isinstance(outcome, End):
                    reason = outcome.reason
                    break
                if pushed in done:
                    doc = pushed.result()
                    continue
                doc = outcome                      # the next document, or None: ran out
        finally:
            # Also reached when a REST hang-up cancels this driver mid-document.
            for task in (runner, pushed):
                if task is not None and not task.done():
                    task.cancel()
        await self.carrier.finish(call, reason)

    async def _document(self, doc: Any) -> dict[str, Any] | End | None:
        for kind, params in check_document(doc):
            outcome = await self._command(kind, params)
            if outcome is FALLTHROUGH or outcome is None:
                continue
            return outcome
        return None

    async def _command(self, kind: str, params: dict[str, Any]) -> Any:
        call, carrier = self.call, self.carrier
        if kind == "say":
            return await self._say(params["text"])
        if kind == "play":
            carrier.note(call, "played", params["url"])
            loops = params.get("loop", 1)
            await carrier.sleep(2.0 * (loops if isinstance(loops, int) and loops > 0 else 1))
        elif kind == "pause":
            await carrier.sleep(float(params["seconds"]))
        elif kind == "dtmf":
            carrier.note(call, "dtmf", params["digits"])
            await carrier.sleep(0.1 * len(params["digits"]))
        elif kind == "gather":
            return await self._gather(params)
        elif kind == "redirect":
            return await carrier.fetch(call, params["url"], "redirect", source="redirect")
        elif kind == "hangup":
            return End("completed")
        elif kind == "reject":
            return End(_reject_reason(params))
        return None

    async def _say(self, text: str) -> End | None:
        self.carrier.note(self.call, "heard", text)
        self.callee.heard.append(text)
        if self.callee.hangs_up_during_say():
            await self.carrier.sleep(say_seconds(text) / 2)
            return End("hangup-user")
        await self.carrier.sleep(say_seconds(text))
        return None

    async def _gather(self, params: dict[str, Any]) -> Any:
        call, carrier = self.call, self.carrier
        for kind, sub in (next(iter(p.items())) for p in params.get("prompt", [])):
            outcome = await self._command(kind, sub)
            if isinstance(outcome, End):
                return outcome
        answer = self.callee.at_gather(str(params.get("input", "speech")))
        if answer.kind == "silence":
            await carrier.sleep(answer.wait + float(params.get("timeout", 5)))
            return FALLTHROUGH
        await carrier.sleep(answer.wait)
        if answer.kind == "hangup":
            return End("hangup-user")
        if answer.kind == "speech":
            carrier.note(call, "said", answer.value)
            await carrier.sleep(say_seconds(answer.value))
            return await carrier.fetch(call, params["action"], "speech", source="gather",
                                       text=answer.value, confidence=CONFIDENCE)
        carrier.note(call, "pressed", answer.value)
        await carrier.sleep(0.2 * len(answer.value))
        return await carrier.fetch(call, params["action"], "digits", source="gather", digits=answer.value)


def _reject_reason(params: dict[str, Any]) -> str:
    return "busy" if params.get("reason") == "busy" else "rejected"
