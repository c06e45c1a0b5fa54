"""One live call: its record, its flow machines, and what it owes the carrier."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .machine import CallModel, FlowMachine
from .program import Step

if TYPE_CHECKING:
    from .flows import Flow
    from .record import CallRecord

# Turn results consume the open gather's token (ARCHITECTURE "Turn tokens").
TURN_RESULTS = frozenset({"speech.final", "dtmf", "gather.timeout"})


def new_token() -> str:
    return secrets.token_urlsafe(12)


@dataclass(eq=False)
class Session:
    record: CallRecord
    flow: Flow
    machine: FlowMachine
    model: CallModel
    supervisor: FlowMachine | None = None
    sup_model: CallModel | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Carrier steps rendered during the current dispatch, not yet delivered.
    outbox: list[Step] = field(default_factory=list)
    # True while the carrier runs a document that will come back to us
    # (ends in keep-alive or redirect), or before its first fetch: new
    # programs then wait for that fetch instead of interrupting by REST.
    fetch_expected: bool = False
    # The opening state's program went out with the placement (inline).
    opening_sent: bool = False
    # Our hang-up was sent: a plain "completed" then means hangup-bot.
    bot_hangup: bool = False
    pending_end_reason: str | None = None
    waiter: asyncio.Future[str] | None = None
    timers: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    reply_task: asyncio.Task[None] | None = None
    # Command carriers: the steps still to run, and the tag of the step whose
    # playback.done we wait for. A new program bumps the generation.
    commands: list[Step] = field(default_factory=list)
    command_tag: str | None = None
    command_gen: int = 0
    gather_sent_at: float | None = None
    turn_result_at: float | None = None
    listen_wait_ms: float | None = None
    changed: bool = False
    log: list[dict[str, Any]] = field(default_factory=list)

    @property
    def call_id(self) -> str:
        return self.record.call_id

    def call_view(self) -> dict[str, Any]:
        """What templates see as ``call``: data about the call, never credentials."""
        r = self.record
        return {
            "id": r.call_id, "from": r.from_number, "to": r.to_number, "direction": r.direction,
            "mode": r.mode, "flow": r.flow, "message": r.message or "", "turnCount": r.turn_count,
            "answeredAt": r.answered_at, "provider": r.provider, "route": r.route,
        }

    def context(self, config: dict[str, Any], event: dict[str, Any] | None, state: str | None = None) -> dict[str, Any]:
        return {
            "call": self.call_view(),
            "vars": self.record.vars,
            "event": event or {},
            "config": config,
            "state": state or self.model.state,
            "turn": {"token": self.record.turn, "awaited": self.waiter is not None},
        }

    def cancel_timers(self, prefix: str) -> None:
        for name in [n for n in self.timers if n.startswith(prefix)]:
            self.timers.pop(name).cancel()
        self.record.timers = [t for t in self.record.timers if not t.name.startswith(prefix)]

    def cancel_all(self) -> None:
        self.cancel_timers("")
        if self.reply_task and not self.reply_task.done():
            self.reply_task.cancel()
