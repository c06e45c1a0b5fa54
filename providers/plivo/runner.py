"""How the Plivo emulator runs one call: ringing, answering, Plivo XML
execution, signed callbacks. Faithful, not friendly (DESIGN §8): documents are
parsed with a real XML parser, a document that runs out hangs up, a GetInput
with no input falls through to the next element, an unknown element fails the
call, and a transfer replaces whatever document was running.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING
from urllib.parse import urljoin

from voicecall.providers.emulation import DocumentRunner, type_of
from voicecall.providers.plivo.calls import AppError, EmuCall, Fetch

if TYPE_CHECKING:
    from voicecall.providers.plivo.emulator import PlivoEmulator

# Elements Plivo knows (plivoxml's Response nestables) that this emulator does not play.
UNSUPPORTED = frozenset({"Conference", "Dial", "GetDigits", "Message", "PreAnswer", "Record", "MultiPartyCall"})
PLAYED = frozenset({"Speak", "Play", "Wait", "GetInput", "Hangup", "Redirect", "DTMF", "Stream"})
PROMPT = frozenset({"Speak", "Play", "Wait"})       # what GetInput may hold


class CallRunner(DocumentRunner):
    """Drives one EmuCall against our webhook, on the emulator's scaled clock."""

    APP_ERROR = AppError
    ANSWERS_WITHOUT = "Hangup"

    emu: PlivoEmulator
    call: EmuCall

    # -- lifecycle ---------------------------------------------------------

    async def _inbound(self) -> None:
        self.call.status = "ringing"
        self.replace(self.call.answer)

    async def _outbound(self) -> None:
        call, callee = self.call, self.call.callee
        await self.emu.sleep(0.2)
        if callee.ring == "fail":
            self.end("failed", "UNALLOCATED_NUMBER")
            return
        self.set_status("ringing")
        if call.ring_url:
            call.callbacks.put_nowait(("status", call.ring_url, self.params(Event="Ring")))
        if callee.ring == "busy":
            await self.emu.sleep(0.5)
            self.end("busy", "USER_BUSY")
            return
        if callee.ring == "no-answer" or callee.answer_after > call.ring_timeout:
            await self.emu.sleep(call.ring_timeout)
            self.end("timeout" if callee.ring == "answer" else "no-answer", "NO_ANSWER")
            return
        await self.emu.sleep(callee.answer_after)
        if not call.live:          # cancelled (REST) while ringing
            return
        self.answer()
        if call.send_digits:
            self.note("dtmf", call.send_digits)
            await self.emu.sleep(0.5 * len(call.send_digits))
        if call.machine and call.machine_url:
            machine = "false" if self.emu.answered_by(call.to) == "human" else "true"
            call.callbacks.put_nowait(("machine", call.machine_url,
                                       self.params(Machine=machine, Event="MachineDetection")))
        self.replace(call.answer)

    def _mark_answered(self) -> None:
        self.set_status("in-progress")

    def _time_limit_reached(self) -> None:
        self.end("completed", "SCHEDULED_HANGUP")

    def end_normally(self) -> None:
        self.end("completed", "NORMAL_CLEARING")

    def end_failed(self) -> None:
        self.end("failed", "INTERNAL_ERROR")

    def set_status(self, status: str) -> None:
        if self.call.live:          # over is over: nothing revives an ended call
            self.call.status = status

    def end(self, status: str, cause: str) -> None:
        """The call is over: hangup_url callback, stop the document, wake waiters."""
        call = self.call
        if not call.live:
            return
        call.ended_at = self.emu.now()
        call.hangup_cause = cause
        call.status = status
        self.note("ended", {"reason": status, "cause": cause})
        if call.hangup_url:
            duration = int(call.ended_at - call.answered_at) if call.answered_at else 0
            call.callbacks.put_nowait(("hangup", call.hangup_url, self.params(
                Event="Hangup", HangupCause=cause, Duration=str(duration), BillDuration=str(duration))))
        call.callbacks.put_nowait(None)
        for task in (call.doc_task, *call.timers):
            if task is not None and task is not asyncio.current_task():
                task.cancel()

    def params(self, **extra: str) -> dict[str, str]:
        call = self.call
        params = {
            "CallUUID": call.call_uuid, "RequestUUID": call.request_uuid,
            "ALegUUID": call.call_uuid, "ALegRequestUUID": call.request_uuid,
            "From": call.from_, "To": call.to, "Direction": call.direction,
            "CallStatus": call.status,
        }
        params.update(extra)
        return params

    # -- callbacks -----------------------------------------------------------

    async def _post_callback(self, item: tuple[str, str, dict[str, str]]) -> None:
        kind, url, params = item
        for _ in range(self.emu.chaos.copies()):
            try:
                status, _ = await self.emu.post(url, params)
                self.note("request", {"type": kind, "event": params["CallStatus"], "status": status})
            except AppError as exc:   # Plivo logs a failed callback and carries on
                self.note("request", {"type": kind, "event": params["CallStatus"], "error": str(exc)})

    # -- documents -------------------------------------------------------------

    def _app_failed(self, exc: Exception) -> None:
        self.note("error", str(exc))
        self.end("failed", "INVALID_ANSWER_XML" if "XML" in str(exc) else "ANSWER_URL_FAILURE")

    async def _load(self, source: Fetch) -> ET.Element:
        status, text = await self.emu.post(source.url, self.params(**source.params), method=source.method)
        self.note("request", {"type": type_of(source.url), "params": source.params, "status": status})
        if not 200 <= status < 300:
            raise AppError(f"fetching {source.url} answered HTTP {status}")
        try:
            root = ET.fromstring(text.encode("utf-8"))
        except ET.ParseError as exc:
            raise AppError(f"invalid XML: {exc}") from None
        if root.tag != "Response":
            raise AppError(f"invalid XML: root element is <{root.tag}>, not <Response>")
        for child in root:
            if child.tag not in PLAYED and child.tag not in UNSUPPORTED:
                raise AppError(f"invalid XML: unknown element <{child.tag}>")
            if child.tag == "GetInput":
                for inner in child:
                    if inner.tag not in PROMPT:
                        raise AppError(f"invalid XML: <{inner.tag}> cannot be nested in <GetInput>")
            elif len(child):
                raise AppError(f"invalid XML: <{child.tag}> cannot hold elements")
        self.note("document", {"source": source.source or type_of(source.url), "commands": text})
        return root

    async def _verb(self, el: ET.Element, doc_url: str) -> Fetch | None:
        tag = el.tag
        if tag in PROMPT:
            await self._media(el)
        elif tag == "GetInput":
            return await self._get_input(el, doc_url)
        elif tag == "Redirect":
            url = (el.text or "").strip()
            if not url:
                raise AppError("invalid XML: <Redirect> without a URL")
            return Fetch(urljoin(doc_url, url), el.get("method", "POST").upper())
        elif tag == "Hangup":
            reason = el.get("reason")
            self.note("hangup", reason or "xml")
            if reason and self.call.answered_at is None:
                self.end("busy" if reason == "busy" else "completed",
                         "USER_BUSY" if reason == "busy" else "CALL_REJECTED")
            else:
                self.end("completed", "NORMAL_CLEARING")
        elif tag == "DTMF":
            digits = (el.text or "").strip()
            self.note("dtmf", digits)
            await self.emu.sleep(0.5 * len(digits))
        elif tag == "Stream":
            self.note("stream", {"url": (el.text or "").strip(), "extraHeaders": el.get("extraHeaders", "")})
            if el.get("keepCallAlive") == "true":
                await self.emu.sleep(3600)     # media is not emulated: held until transferred or ended
        else:
            raise AppError(f"emulator does not play <{tag}>")
        return None

    async def _media(self, el: ET.Element) -> None:
        if el.tag == "Wait":
            await self.emu.sleep(_int(el.get("length"), 1))
        elif el.tag == "Play":
            await self._play(el, _int(el.get("loop"), 1))
        else:
            await self._speak(el)

    def _say_loops(self, verb: ET.Element) -> int:
        return max(1, _int(verb.get("loop"), 1))

    async def _get_input(self, el: ET.Element, doc_url: str) -> Fetch | None:
        call = self.call
        input_ = el.get("inputType", "")
        if input_ not in ("dtmf", "speech", "dtmf speech", "speech dtmf"):
            raise AppError(f"invalid XML: GetInput inputType {input_!r}")
        action = (el.get("action") or "").strip()
        if not action:
            raise AppError("invalid XML: GetInput without action")
        action = urljoin(doc_url, action)
        timeout = _int(el.get("executionTimeout"), 15)
        self.note("gather", {"input": input_, "action": action})
        for child in el:
            await self._media(child)
            if not call.live:
                return None
        answer = await self._await_answer(input_, timeout)
        if answer.kind == "hangup":
            return None
        if answer.kind == "silence":
            return None          # falls through to the next element
        if answer.kind == "speech":
            self.note("said", answer.value)
            result = {"InputType": "speech", "Speech": answer.value, "SpeechConfidenceScore": "0.92", "Digits": ""}
        else:
            digits = _digits(answer.value, el.get("finishOnKey", "#"), el.get("numDigits"))
            self.note("pressed", digits)
            result = {"InputType": "dtmf", "Digits": digits, "Speech": ""}
        fetch = Fetch(action, el.get("method", "POST").upper(), result)
        if el.get("redirect", "true") == "true":
            return fetch            # the action's reply is the call's next document
        # redirect="false": the action is told, the document carries on.
        status, _ = await self.emu.post(action, self.params(**result), method=fetch.method)
        self.note("request", {"type": type_of(action), "params": result, "status": status})
        return None


def _digits(pressed: str, finish_on_key: str, num_digits: str | None) -> str:
    if finish_on_key and finish_on_key != "none" and finish_on_key in pressed:
        pressed = pressed.split(finish_on_key, 1)[0]
    if num_digits and num_digits.isdigit():
        pressed = pressed[: int(num_digits)]
    return pressed


def _int(raw: str | None, default: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise AppError(f"invalid XML: {raw[:20]!r} is not a whole number") from None
