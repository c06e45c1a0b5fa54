"""How the Twilio emulator runs one call: ringing, answering, TwiML execution,
signed webhooks. Faithful, not friendly (DESIGN §8): documents are parsed with
a real XML parser, a document that runs out hangs up, a gather with no input
falls through, an unknown verb is an application error.
"""

from __future__ import annotations

import asyncio
import logging
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urljoin

from voicecall.providers.callee import Callee
from voicecall.providers.emulation import SECONDS_PER_WORD, DocumentRunner, LogEntry, cancel_quietly, type_of

__all__ = ["SECONDS_PER_WORD", "AppError", "CallRunner", "EmuCall", "Fetch", "LogEntry", "cancel_quietly",
           "form_body"]

if TYPE_CHECKING:
    from voicecall.providers.twilio.emulator import TwilioEmulator

log = logging.getLogger("voicecall.providers.twilio.emulator")

# Verbs Twilio knows but this emulator does not play: honest failure, not silence.
UNSUPPORTED = frozenset({"Dial", "Enqueue", "Leave", "Record", "Sms", "Message", "Start", "Stop",
                         "Refer", "Pay", "Prompt", "Queue", "Echo"})
APPLICATION_ERROR = "We are sorry, an application error has occurred. Goodbye."
TERMINAL = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})


class AppError(Exception):
    """What Twilio reports as a call notification (11200, 12100, …) before hanging up."""

    def __init__(self, code: int, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass
class Fetch:
    """Where the next document comes from: a URL, or inline TwiML."""

    url: str | None = None
    method: str = "POST"
    params: dict[str, str] = field(default_factory=dict)
    twiml: str | None = None
    origin: str | None = None        # "inline" (create) or "push" (update) for logs


@dataclass
class EmuCall:
    sid: str
    to: str
    from_: str
    direction: str
    callee: Callee
    first: Fetch
    status_callback: str | None = None
    status_events: frozenset[str] = frozenset({"completed"})
    timeout: int = 60
    time_limit: int | None = None
    send_digits: str | None = None
    machine_detection: str | None = None
    answered_by: str = "human"
    status: str = "queued"
    created: float = field(default_factory=time.time)
    answered_at: float | None = None
    ended_at: float | None = None
    seq: int = 0
    log: list[LogEntry] = field(default_factory=list)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    doc_task: asyncio.Task[None] | None = None
    timers: list[asyncio.Task[None]] = field(default_factory=list)
    callbacks: asyncio.Queue[dict[str, str] | None] = field(default_factory=asyncio.Queue)

    @property
    def live(self) -> bool:
        return self.status not in TERMINAL

    def note(self, at: float, kind: str, detail: Any = None) -> None:
        self.log.append(LogEntry(at, kind, detail))


class CallRunner(DocumentRunner):
    """Drives one EmuCall against our webhook, on the emulator's scaled clock."""

    APP_ERROR = AppError
    ANSWERS_WITHOUT = "Reject"

    emu: TwilioEmulator
    call: EmuCall

    # -- lifecycle ---------------------------------------------------------

    async def _outbound(self) -> None:
        call, callee = self.call, self.call.callee
        self.set_status("initiated", "initiated")
        if callee.ring == "fail":
            self.end("failed")
            return
        await self.emu.sleep(0.2)
        self.set_status("ringing", "ringing")
        if callee.ring == "busy":
            await self.emu.sleep(0.5)
            self.end("busy")
            return
        if callee.ring == "no-answer" or callee.answer_after > call.timeout:
            await self.emu.sleep(call.timeout)
            self.end("no-answer")
            return
        await self.emu.sleep(callee.answer_after)
        if not call.live:          # hung up (REST) while ringing
            return
        self.answer()
        if call.send_digits:
            self.note("dtmf", call.send_digits)
        self.replace(call.first)

    async def _inbound(self) -> None:
        self.set_status("ringing", "ringing")
        self.replace(self.call.first)

    def _mark_answered(self) -> None:
        self.set_status("in-progress", "answered")

    def _time_limit_reached(self) -> None:
        self.end("completed")

    def end_normally(self) -> None:
        self.end("completed")

    def end_failed(self) -> None:
        self.end("failed")

    def set_status(self, status: str, event: str | None) -> None:
        if not self.call.live:
            return          # over is over: a late ringing/answer must not revive the call
        self.call.status = status
        if event and event in self.call.status_events and self.call.status_callback:
            self.call.callbacks.put_nowait(self.callback_params())

    def end(self, status: str) -> None:
        """The call is over: final callback, stop the document, wake waiters."""
        call = self.call
        if not call.live:
            return
        call.ended_at = self.emu.now()
        self.note("ended", {"reason": status})
        self.set_status(status, "completed")
        call.callbacks.put_nowait(None)
        task = call.doc_task
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    # -- parameters and webhooks ---------------------------------------------

    def base_params(self) -> dict[str, str]:
        call = self.call
        params = {
            "AccountSid": self.emu.account_sid, "ApiVersion": "2010-04-01",
            "CallSid": call.sid, "CallStatus": call.status, "Direction": call.direction,
            "From": call.from_, "To": call.to, "Caller": call.from_, "Called": call.to,
        }
        if call.machine_detection and call.answered_at:
            params["AnsweredBy"] = call.answered_by
        return params

    def callback_params(self) -> dict[str, str]:
        call = self.call
        params = self.base_params()
        params.update({
            "SequenceNumber": str(call.seq), "CallbackSource": "call-progress-events",
            "Timestamp": formatdate(usegmt=True),
        })
        call.seq += 1
        if not call.live:
            duration = int((call.ended_at or 0) - call.answered_at) if call.answered_at else 0
            params["CallDuration"] = str(max(0, duration))
        return params

    async def _post_callback(self, params: dict[str, str]) -> None:
        assert self.call.status_callback
        for _ in range(self.emu.chaos.copies()):
            try:
                status, _ = await self.emu.post(self.call.status_callback, "POST", params)
                self.note("request", {"type": type_of(self.call.status_callback), "event": params["CallStatus"],
                                      "seq": params["SequenceNumber"], "status": status})
            except AppError as exc:   # Twilio logs a notification and carries on
                self.note("request", {"type": type_of(self.call.status_callback), "event": params["CallStatus"],
                                      "error": f"{exc.code} {exc.message}"})

    # -- documents ---------------------------------------------------------------

    def _ran_out(self) -> None:
        call = self.call
        if call.live and call.direction == "inbound" and call.answered_at is None:
            self.answer()       # an empty inbound document still answered the call
        super()._ran_out()

    def _app_failed(self, exc: Exception) -> None:
        assert isinstance(exc, AppError)
        self.note("error", {"code": exc.code, "message": exc.message})
        if self.call.answered_at is not None:
            self.note("heard", APPLICATION_ERROR)
            self.end("completed")
        else:
            self.end("failed")

    async def _load(self, source: Fetch) -> ET.Element:
        if source.twiml is not None:
            text = source.twiml
        else:
            assert source.url is not None
            params = {**self.base_params(), **source.params}
            status, text = await self.emu.post(source.url, source.method, params)
            self.note("request", {"type": type_of(source.url), "url": source.url, "params": source.params,
                                  "status": status})
            if not 200 <= status < 300:
                raise AppError(11200, f"HTTP retrieval failure: {source.url} answered {status}")
        try:
            root = ET.fromstring(text.encode("utf-8"))
        except ET.ParseError as exc:
            raise AppError(12100, f"Document parse failure: {exc}") from None
        if root.tag != "Response":
            raise AppError(12100, f"Document parse failure: root element is <{root.tag}>, not <Response>")
        for child in root.iter():
            if child is not root and child.tag not in KNOWN_VERBS:
                raise AppError(12200, f"Schema validation warning: invalid verb <{child.tag}>")
        origin = source.origin or type_of(source.url)
        self.note("document", {"source": origin, "commands": [_command(v) for v in root], "twiml": text})
        return root

    async def _verb(self, verb: ET.Element, doc_url: str | None) -> Fetch | None:
        call, tag = self.call, verb.tag
        if tag in ("Say", "Play", "Pause"):
            await self._media(verb)
        elif tag == "Gather":
            return await self._gather(verb, doc_url)
        elif tag == "Redirect":
            url = (verb.text or "").strip()
            if not url:
                raise AppError(12100, "Document parse failure: <Redirect> without a URL")
            return Fetch(urljoin(doc_url or "", url), verb.get("method", "POST").upper())
        elif tag == "Hangup":
            self.note("hangup", "twiml")
            self.end("completed")
        elif tag == "Reject":
            reason = verb.get("reason", "rejected")
            self.note("reject", reason)
            if call.answered_at is None:
                self.end("busy" if reason == "busy" else "no-answer")
            else:
                self.end("completed")
        elif tag == "Connect":
            stream = verb.find("Stream")
            params = {p.get("name", ""): p.get("value", "") for p in verb.iter("Parameter")}
            self.note("stream", {"url": stream.get("url") if stream is not None else None, "parameters": params})
            await self.emu.sleep(3600)  # media is not emulated: the call holds until updated or ended
        else:
            raise AppError(12100, f"emulator does not play <{tag}>")
        return None

    async def _media(self, verb: ET.Element) -> None:
        tag = verb.tag
        if tag == "Pause":
            await self.emu.sleep(_int(verb.get("length"), 1))
        elif tag == "Play" and verb.get("digits"):
            digits = verb.get("digits", "")
            self.note("dtmf", digits)
            await self.emu.sleep(0.5 * len(digits))
        elif tag == "Play":
            await self._play(verb, _int(verb.get("loop"), 1))
        else:
            await self._speak(verb)

    def _say_loops(self, verb: ET.Element) -> int:
        return _int(verb.get("loop"), 1)

    async def _gather(self, verb: ET.Element, doc_url: str | None) -> Fetch | None:
        call = self.call
        input_ = verb.get("input", "dtmf")
        timeout = _int(verb.get("timeout"), 5)
        action = urljoin(doc_url or "", verb.get("action", "")) or doc_url
        self.note("gather", {"input": input_, "action": action})
        for child in verb:
            if child.tag not in ("Say", "Play", "Pause"):
                raise AppError(12200, f"Schema validation warning: <{child.tag}> cannot be nested in <Gather>")
            await self._media(child)
            if not call.live:
                return None
        answer = await self._await_answer(input_, timeout)
        if answer.kind == "hangup":
            return None
        if answer.kind == "silence":
            if verb.get("actionOnEmptyResult") == "true" and action:
                return Fetch(action, verb.get("method", "POST").upper(), {"Digits": ""})
            return None          # falls through to the next verb
        if action is None:
            raise AppError(11200, "HTTP retrieval failure: <Gather> without action in an inline document")
        method = verb.get("method", "POST").upper()
        if answer.kind == "speech":
            self.note("said", answer.value)
            return Fetch(action, method, {"SpeechResult": answer.value, "Confidence": "0.92"})
        digits = _digits(answer.value, verb.get("finishOnKey", "#"), verb.get("numDigits"))
        self.note("pressed", digits)
        return Fetch(action, method, {"Digits": digits})


KNOWN_VERBS = frozenset({"Say", "Play", "Pause", "Gather", "Redirect", "Hangup", "Reject", "Connect",
                         "Stream", "Parameter", *UNSUPPORTED})


def _command(verb: ET.Element) -> dict[str, Any]:
    """A verb as a neutral command (``{"say": {"text": ...}}``) for logs and timelines."""
    attrs: dict[str, Any] = dict(verb.attrib)
    text = (verb.text or "").strip()
    tag = verb.tag
    if tag == "Say":
        return {"say": {**attrs, "text": text}}
    if tag == "Play" and "digits" in attrs:
        return {"dtmf": attrs}
    if tag == "Play":
        return {"play": {**attrs, "url": text}}
    if tag == "Pause":
        return {"pause": {"seconds": attrs.get("length", "1")}}
    if tag == "Redirect":
        return {"redirect": {"url": text}}
    if tag == "Gather":
        return {"gather": {**attrs, "prompt": [_command(child) for child in verb]}}
    if tag == "Connect":
        stream = verb.find("Stream")
        return {"stream": dict(stream.attrib) if stream is not None else {}}
    return {tag.lower(): attrs}


def _digits(pressed: str, finish_on_key: str, num_digits: str | None) -> str:
    if finish_on_key and finish_on_key in pressed:
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
        raise AppError(12200, f"Schema validation warning: {raw[:20]!r} is not a whole number") from None


def form_body(params: dict[str, str]) -> bytes:
    return urlencode(params).encode("utf-8")
