"""Provider-neutral events: the only input a flow ever sees."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

LIFECYCLE_RANK: Mapping[str, int] = {
    "call.initiated": 1,
    "call.ringing": 2,
    "call.answered": 3,
    "call.ended": 4,
}

EVENT_TYPES: frozenset[str] = frozenset({
    *LIFECYCLE_RANK,
    "speech.partial",
    "speech.final",
    "dtmf",
    "gather.timeout",
    "media.connected",
    "media.stopped",
    "playback.done",
    "machine.detected",
    "reply.ready",
    "reply.failed",
    "rpc.speak",
    "rpc.continue",
    "rpc.dtmf",
    "rpc.end",
    "call.max_duration",
    "call.stale",
})

TIMER_PREFIX = "timer."

TERMINAL_STATES: tuple[str, ...] = (
    "completed", "hangup-user", "hangup-bot", "timeout", "error",
    "failed", "no-answer", "busy", "voicemail",
)
LIVE_STATES: tuple[str, ...] = ("initiated", "ringing", "answered", "active", "speaking", "listening")


def is_known_event(name: str) -> bool:
    """True for vocabulary events and any ``timer.<name>``."""
    return name in EVENT_TYPES or (name.startswith(TIMER_PREFIX) and len(name) > len(TIMER_PREFIX))


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened to a call, in carrier-neutral terms."""

    type: str
    data: Mapping[str, Any] = field(default_factory=dict)
    call_id: str | None = None
    provider_call_id: str | None = None
    token: str | None = None
    key: str | None = None
    seq: int | None = None

    @property
    def rank(self) -> int:
        return LIFECYCLE_RANK.get(self.type, 0)

    @property
    def is_rpc(self) -> bool:
        return self.type.startswith("rpc.")

    def as_context(self) -> dict[str, Any]:
        """What templates see as ``event``: data only, never credentials."""
        return {"type": self.type, **self.data}
