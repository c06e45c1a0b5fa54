"""What the Plivo emulator keeps per call (and the shape of its log)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from voicecall.providers.callee import Callee
from voicecall.providers.emulation import LogEntry

__all__ = ["TERMINAL", "AppError", "EmuCall", "Fetch", "LogEntry"]

TERMINAL = frozenset({"completed", "busy", "failed", "no-answer", "timeout", "cancel"})


class AppError(Exception):
    """Plivo cannot go on with the call's XML (bad document, fetch failure)."""


@dataclass
class Fetch:
    url: str
    method: str = "POST"
    params: dict[str, str] = field(default_factory=dict)
    source: str | None = None


@dataclass
class EmuCall:
    call_uuid: str
    request_uuid: str
    to: str                       # Plivo's spelling: digits, no '+'
    from_: str
    direction: str
    callee: Callee
    answer: Fetch
    hangup_url: str | None = None
    ring_url: str | None = None
    machine_url: str | None = None
    ring_timeout: int = 120
    time_limit: int | None = None
    send_digits: str | None = None
    machine: bool = False
    status: str = "queued"
    answered_at: float | None = None
    ended_at: float | None = None
    hangup_cause: str = ""
    log: list[LogEntry] = field(default_factory=list)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    doc_task: asyncio.Task[None] | None = None
    timers: list[asyncio.Task[None]] = field(default_factory=list)
    callbacks: asyncio.Queue[tuple[str, str, dict[str, str]] | None] = field(default_factory=asyncio.Queue)

    @property
    def live(self) -> bool:
        return self.status not in TERMINAL

    @property
    def heard(self) -> list[str]:
        return [e.detail for e in self.log if e.kind == "heard"]

    def note(self, at: float, kind: str, detail: Any = None) -> None:
        self.log.append(LogEntry(at, kind, detail))
