"""The call record: the contract shape (DESIGN §4) plus what the engine needs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from .events import TERMINAL_STATES

Direction = Literal["outbound", "inbound"]


def iso(ts: float | None) -> str | None:
    """Epoch seconds → ``2026-11-22T01:02:03.456Z``."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(ts * 1000) % 1000:03d}Z"


@dataclass(slots=True)
class TranscriptEntry:
    role: Literal["bot", "caller"]
    text: str
    at: float


@dataclass(slots=True)
class Timer:
    name: str
    due: float


@dataclass(slots=True)
class CallRecord:
    call_id: str
    provider: str
    direction: Direction
    mode: str
    flow: str
    state: str
    from_number: str
    to_number: str
    started_at: float
    provider_call_id: str | None = None
    answered_at: float | None = None
    ended_at: float | None = None
    end_reason: str | None = None
    turn_count: int = 0
    transcript: list[TranscriptEntry] = field(default_factory=list)
    # Internal: never part of the public record.
    flow_hash: str = ""
    message: str | None = None
    vars: dict[str, Any] = field(default_factory=dict)
    rank: int = 0
    last_activity_at: float = 0.0
    turn: str | None = None
    timers: list[Timer] = field(default_factory=list)
    delivered: bool = True
    route: str | None = None
    # A number route's responder overrides (responseModel, responseSystemPrompt).
    route_settings: dict[str, Any] = field(default_factory=dict)
    agent_id: str | None = None
    session_scope: str | None = None
    dtmf_sequence: str | None = None
    supervisor_state: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES or self.ended_at is not None

    def say(self, role: Literal["bot", "caller"], text: str, at: float) -> None:
        self.transcript.append(TranscriptEntry(role, text, at))

    def to_public(self) -> dict[str, Any]:
        """Exactly the contract shape ``status --json`` prints."""
        return {
            "callId": self.call_id,
            "provider": self.provider,
            "providerCallId": self.provider_call_id,
            "direction": self.direction,
            "mode": self.mode,
            "flow": self.flow,
            "state": self.state,
            "terminal": self.terminal,
            "from": self.from_number,
            "to": self.to_number,
            "startedAt": iso(self.started_at),
            "answeredAt": iso(self.answered_at),
            "endedAt": iso(self.ended_at),
            "endReason": self.end_reason,
            "turnCount": self.turn_count,
            "transcript": [{"role": t.role, "text": t.text, "at": iso(t.at)} for t in self.transcript],
        }

    def to_storage(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_storage(cls, data: dict[str, Any]) -> CallRecord:
        data = dict(data)
        data["transcript"] = [TranscriptEntry(**t) for t in data.get("transcript", [])]
        data["timers"] = [Timer(**t) for t in data.get("timers", [])]
        return cls(**data)
