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
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

from voicecall.providers.callee import Callee

if TYPE_CHECKING:
    from voicecall.engine.clock import Clock

T = TypeVar("T")


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

    def _call(self, key: str) -> Any:
        return self.calls[key]

    def _injected_failure(self) -> Any:
        """The next failure queued by ``fail_next``, or None."""
        return self._fail_next.pop(0) if self._fail_next else None


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
