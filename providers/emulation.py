"""Scaffolding every emulated carrier (the far side in tests, ``flows simulate``
and the demo) shares: seeded callback chaos, the call log's shape, the loopback
REST server, the scaled clock, the call registry and the scripted-callee lookup.

Only mechanics live here; what a carrier says and when stays in its own
emulator, so each one remains a faithful, independent oracle (DESIGN §8).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import random
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

from voicecall.providers.callee import Callee, Response, ScriptError

if TYPE_CHECKING:
    import xml.etree.ElementTree as ET

    from voicecall.engine.clock import Clock

T = TypeVar("T")
SECONDS_PER_WORD = 0.3           # how long the emulated speech of one word takes


@dataclass(frozen=True, slots=True)
class Chaos:
    """Seeded misdelivery of status callbacks and events: twice, or one held past the next.

    ``roll`` draws from a generator seeded at construction; carriers that draw per
    call (mock, Telnyx) seed their own from ``seed`` and never call it.
    """

    seed: int = 0
    duplicate: float = 0.0
    reorder: float = 0.0
    _rng: random.Random = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("duplicate", "reorder"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"Chaos.{name} is a probability in [0, 1], got {value!r}")
        object.__setattr__(self, "_rng", random.Random(self.seed))

    def roll(self, probability: float) -> bool:
        return self._rng.random() < probability

    def copies(self) -> int:
        """How many times the next callback goes out: twice when chaos duplicates it."""
        return 2 if self.duplicate and self.roll(self.duplicate) else 1


def coerce_chaos(spec: Any) -> Chaos:
    """A fresh Chaos from a Chaos, a mapping, or any object with ``seed``/``duplicate``/
    ``reorder``, so one scenario option drives every carrier. Fresh: each emulator
    replays its seed from the start, whoever else holds the same spec."""
    if spec is None:
        return Chaos()
    if isinstance(spec, Mapping):
        return Chaos(**dict(spec))
    return Chaos(int(getattr(spec, "seed", 0)), float(getattr(spec, "duplicate", 0.0)),
                 float(getattr(spec, "reorder", 0.0)))


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One line of a call's log, the same shape on every carrier so the scenario
    runner reads them all: request document heard said pressed dtmf played
    stream rest ended error time-limit (and a few carrier-only kinds)."""

    at: float
    kind: str
    detail: Any = None


async def deliver_in_order(queue: asyncio.Queue[T | None], chaos: Chaos,
                           post: Callable[[T], Awaitable[None]]) -> None:
    """Post queued callbacks in order until the ``None`` marker, unless chaos holds
    one back past the next (seeded); a held one still goes out before the end."""
    held: T | None = None
    while True:
        item = await queue.get()
        if item is None:
            if held is not None:
                await post(held)
            return
        if chaos.reorder and held is None and chaos.roll(chaos.reorder):
            held = item          # delivered after the next one
            continue
        await post(item)
        if held is not None:
            await post(held)
            held = None


class RestServer:
    """A carrier's REST API on 127.0.0.1 (a free port) plus the client session its
    webhooks go out on. aiohttp is imported here, not at module import (CLI paths)."""

    def __init__(self) -> None:
        self.runner: Any = None
        self.session: Any = None
        self.base_url = ""

    async def start(self, app: Any, webhook_timeout: float) -> str:
        import aiohttp
        from aiohttp import web

        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=webhook_timeout))
        self.base_url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        return self.base_url

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


class FarSide:
    """What tests and call runners use on every emulated carrier: the scaled clock,
    the call registry and logs, scripted callees and injected REST failures.

    Subclasses set ``clock``, ``time_scale``, ``calls``, ``_callees``,
    ``_answered_by``, ``_default_callee`` and ``_fail_next`` in ``__init__``.
    """

    ENDED = "ended"      # the call's asyncio.Event set once its last callback went out

    clock: Clock
    time_scale: float
    calls: dict[str, Any]
    _callees: dict[str, Callee]
    _answered_by: dict[str, str]
    _default_callee: Callee | None
    _fail_next: list[Any]

    async def sleep(self, seconds: float) -> None:
        await self.clock.sleep(seconds * self.time_scale)

    def now(self) -> float:
        return self.clock.now()

    def number_key(self, number: str) -> str:
        """How this carrier spells ``number`` in its callee book (Plivo drops the '+')."""
        return number

    def set_callee(self, to: str, callee: Callee, *, answered_by: str = "human") -> None:
        """Who answers calls to ``to``; ``answered_by`` is what answering-machine detection reports."""
        self._callees[self.number_key(to)] = callee
        self._answered_by[self.number_key(to)] = answered_by

    def answered_by(self, to: str) -> str:
        return self._answered_by.get(self.number_key(to), "human")

    def callee_for(self, to: str) -> Callee:
        """The script for a call to ``to``: its own, else the default, else a plain answerer."""
        return self._callees.get(self.number_key(to)) or self._default_callee or Callee()

    def log(self, key: str) -> list[LogEntry]:
        return list(self._call(key).log)

    async def wait_ended(self, key: str, timeout: float = 10.0) -> Any:
        """Wait (real seconds) until the call ended and its last callback went out."""
        call = self._call(key)
        await asyncio.wait_for(getattr(call, self.ENDED).wait(), timeout)
        return self._ended(call)

    def _ended(self, call: Any) -> Any:
        """What ``wait_ended`` answers: the call (Twilio and Plivo answer its REST JSON)."""
        return call

    def _call(self, key: str) -> Any:
        return self.calls[key]

    def _injected_failure(self) -> Any:
        """The next failure queued by ``fail_next``, or None."""
        return self._fail_next.pop(0) if self._fail_next else None



class DocumentRunner(ABC):
    """The skeleton the XML document carriers (Twilio, Plivo) share for one call:
    callbacks, answering, the time limit, and fetching then executing documents
    verb by verb until one hands over the next or the call ends.

    A carrier subclass sets ``APP_ERROR`` (its application error) and
    ``ANSWERS_WITHOUT`` (the one verb that leaves an inbound call unanswered), and
    supplies ``_inbound``/``_outbound``, ``_load``, ``_verb``, ``_post_callback``,
    ``_say_loops`` and how it ends a call (``end_normally``, ``end_failed``,
    ``_mark_answered``, ``_time_limit_reached``, ``_app_failed``).
    """

    APP_ERROR: type[Exception] = Exception
    ANSWERS_WITHOUT = ""

    def __init__(self, emulator: Any, call: Any):
        self.emu = emulator
        self.call = call

    def note(self, kind: str, detail: Any = None) -> None:
        self.call.note(self.emu.now(), kind, detail)

    # -- what a carrier supplies -------------------------------------------------
    @abstractmethod
    async def _inbound(self) -> None:
        ...

    @abstractmethod
    async def _outbound(self) -> None:
        ...

    @abstractmethod
    async def _load(self, source: Any) -> ET.Element:
        ...

    @abstractmethod
    async def _verb(self, verb: ET.Element, doc_url: Any) -> Any:
        """Execute one verb; a returned source is the call's next document."""
        ...

    @abstractmethod
    async def _post_callback(self, item: Any) -> None:
        ...

    @abstractmethod
    def end_normally(self) -> None:
        """End an answered call the ordinary way (a hang-up, a document that ran out)."""
        ...

    @abstractmethod
    def end_failed(self) -> None:
        ...

    @abstractmethod
    def _mark_answered(self) -> None:
        ...

    @abstractmethod
    def _time_limit_reached(self) -> None:
        ...

    @abstractmethod
    def _app_failed(self, exc: Exception) -> None:
        ...

    # -- lifecycle ---------------------------------------------------------------
    async def run(self) -> None:
        sender = asyncio.create_task(self._send_callbacks())
        try:
            if self.call.direction == "inbound":
                await self._inbound()
            else:
                await self._outbound()
            await self.call.ended.wait()
        except asyncio.CancelledError:
            self.end_normally()
            raise
        except Exception as exc:        # a bug or a bad script must end the call, not hang a test
            self.note("error", f"emulator: {type(exc).__name__}: {exc}")
            self.end_failed()
        finally:
            await sender

    def answer(self) -> None:
        call = self.call
        if not call.live or call.answered_at is not None:
            return
        call.answered_at = self.emu.now()
        self._mark_answered()
        if call.time_limit:
            call.timers.append(asyncio.create_task(self._time_limit(call.time_limit)))

    async def _time_limit(self, seconds: int) -> None:
        await self.emu.sleep(seconds)
        if self.call.live:
            self.note("time-limit", seconds)
            self._time_limit_reached()

    def replace(self, source: Any) -> None:
        """Run ``source`` now, dropping whatever document was running (REST update, transfer)."""
        old = self.call.doc_task
        if old is not None and old is not asyncio.current_task():
            old.cancel()
        self.call.doc_task = asyncio.create_task(self._documents(source))

    async def _send_callbacks(self) -> None:
        """Callbacks in order, unless chaos doubles or swaps them (seeded); then the call is over."""
        await deliver_in_order(self.call.callbacks, self.emu.chaos, self._post_callback)
        self.call.ended.set()

    # -- documents ---------------------------------------------------------------
    async def _documents(self, source: Any) -> None:
        call = self.call
        try:
            while source is not None and call.live:
                root = await self._load(source)
                source = await self._execute(root, source.url)
            self._ran_out()
        except self.APP_ERROR as exc:
            self._app_failed(exc)
        except ScriptError as exc:
            self.note("error", f"callee script: {exc}")
            self.end_failed()

    def _ran_out(self) -> None:
        """The last document ran out: the carrier hangs up."""
        if self.call.live:
            self.note("document-ended")
            self.end_normally()

    async def _execute(self, root: ET.Element, doc_url: Any) -> Any:
        for verb in list(root):
            if not self.call.live:
                return None
            if verb.tag != self.ANSWERS_WITHOUT and self.call.answered_at is None:
                self.answer()           # any other verb answers an inbound call
            nxt = await self._verb(verb, doc_url)
            if nxt is not None or not self.call.live:
                return nxt
        return None

    # -- what the callee hears and answers -------------------------------------------
    async def _play(self, verb: ET.Element, loops: int) -> None:
        self.note("played", (verb.text or "").strip())
        await self.emu.sleep(3600 if loops == 0 else 1.0 * loops)

    @abstractmethod
    def _say_loops(self, verb: ET.Element) -> int:
        """How many times a speech verb repeats (read after the callee heard it once)."""
        ...

    async def _speak(self, verb: ET.Element) -> None:
        call = self.call
        text = (verb.text or "").strip()
        self.note("heard", text)
        call.callee.heard.append(text)
        words = max(1, len(text.split())) * self._say_loops(verb)
        if call.callee.hangs_up_during_say():
            await self.emu.sleep(SECONDS_PER_WORD * words / 2)
            self.note("hangup", "callee")
            self.end_normally()
            return
        await self.emu.sleep(SECONDS_PER_WORD * words)

    async def _await_answer(self, input_: str, timeout: int) -> Response:
        """The callee's answer to a gather; on ``hangup`` the call is over, on
        ``silence`` the gather has timed out."""
        answer = self.call.callee.at_gather(input_)
        if answer.wait:
            await self.emu.sleep(answer.wait)
        if answer.kind == "hangup":
            self.note("hangup", "callee")
            self.end_normally()
        elif answer.kind == "silence":
            await self.emu.sleep(timeout)
            self.note("gather-timeout")
        return answer

async def stop_document_calls(runners: Iterable[asyncio.Task[Any]], calls: Iterable[Any]) -> None:
    """Cancel each call's runner, then its document and timers (a call listed under
    two keys, as Plivo's are, is stopped once)."""
    for task in list(runners):
        await cancel_quietly(task)
    for call in {id(c): c for c in calls}.values():
        for pending in (call.doc_task, *call.timers):
            if pending is not None:
                await cancel_quietly(pending)


async def cancel_quietly(task: asyncio.Task[Any] | None) -> None:
    if task is not None and not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def with_type(url: str, type_: str) -> str:
    """``url`` with its ``type`` query parameter set to ``type_`` (an operator's callback URL)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "type"]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode([*query, ("type", type_)]), ""))


def type_of(url: str | None) -> str:
    """Our webhook ``type`` in a URL (for logs): ``voice``, ``gather``, ``status`` …"""
    return parse_qs(urlsplit(url or "").query).get("type", ["voice"])[0]


def basic_auth(header: str) -> tuple[str, str]:
    """``(user, password)`` from an HTTP Basic ``Authorization`` header, or empty strings."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return "", ""
    try:
        user, _, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    return user, password
