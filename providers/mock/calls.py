"""What the mock carrier keeps per call, and how it reads a document.

A document is checked whole before any of it runs, as real carriers parse a
TwiML / XML document before executing it: one bad command fails the call
(DESIGN §8, "Emulators are faithful, not friendly").
"""

from __future__ import annotations

import asyncio
import random
import re
from dataclasses import dataclass, field
from typing import Any

from voicecall.providers.callee import Callee
from voicecall.providers.emulation import Chaos as Chaos  # re-exported: tests and scenarios import it here
from voicecall.providers.emulation import LogEntry

E164 = re.compile(r"\+[1-9][0-9]{1,14}")
SEND_DIGITS = re.compile(r"[0-9*#wW]+")
GATHER_INPUTS = frozenset({"speech", "dtmf", "speech dtmf", "dtmf speech"})
# Twilio-like statuses for an ended call, by our end reason.
FINAL_STATUS = {"busy": "busy", "no-answer": "no-answer", "failed": "failed", "canceled": "canceled",
                "rejected": "canceled"}


class CarrierFault(Exception):
    """The carrier cannot go on with a call (bad document, webhook error):
    like a real carrier it logs an application error and fails the call."""


@dataclass(frozen=True, slots=True)
class End:
    """A document step ended the call with this carrier reason."""

    reason: str


@dataclass(eq=False)
class MockCall:
    sid: str
    index: int
    direction: str
    from_number: str
    to_number: str
    url: str | None
    status_callback: str | None
    callee: Callee
    document: dict[str, Any] | None = None
    time_limit: float | None = None
    ring_timeout: float = 60.0
    send_digits: str | None = None
    machine_callback: str | None = None       # set when the call asked for answering-machine detection
    answered_by: str = "human"
    status: str = "queued"
    end_reason: str | None = None
    answered_at: float | None = None
    log: list[LogEntry] = field(default_factory=list)
    seq: int = 0
    rng: random.Random | None = None
    held: list[tuple[str, bytes, str]] = field(default_factory=list)
    pushes: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    status_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    @property
    def heard(self) -> list[str]:
        """Everything the callee heard, in order."""
        return [entry.detail for entry in self.log if entry.kind == "heard"]

    @property
    def live(self) -> bool:
        return self.end_reason is None

    def public(self) -> dict[str, Any]:
        return {"sid": self.sid, "status": self.status, "direction": self.direction,
                "from": self.from_number, "to": self.to_number, "endReason": self.end_reason}


def check_document(doc: Any) -> list[tuple[str, dict[str, Any]]]:
    """``{"commands": [{kind: params}, ...]}`` → ``[(kind, params)]``; CarrierFault names the bad command."""
    if not isinstance(doc, dict) or not isinstance(doc.get("commands"), list):
        raise CarrierFault('document must be a JSON object with a "commands" list')
    return [_command(raw, f"commands[{i}]") for i, raw in enumerate(doc["commands"])]


def _command(raw: Any, where: str) -> tuple[str, dict[str, Any]]:
    if not isinstance(raw, dict) or len(raw) != 1:
        raise CarrierFault(f"{where}: a command is an object with exactly one key")
    ((kind, params),) = raw.items()
    if not isinstance(params, dict):
        raise CarrierFault(f"{where}.{kind}: parameters must be an object")
    check = _CHECKS.get(kind)
    if check is None:
        raise CarrierFault(f"{where}: unknown command {kind!r} (known: {', '.join(sorted(_CHECKS))})")
    problem = check(params, f"{where}.{kind}")
    if problem:
        raise CarrierFault(problem)
    return kind, params


def _text(params: dict[str, Any], where: str) -> str | None:
    return None if isinstance(params.get("text"), str) else f"{where}: 'text' must be a string"


def _url(key: str) -> Any:
    def check(params: dict[str, Any], where: str) -> str | None:
        value = params.get(key)
        if isinstance(value, str) and value.startswith(("http://", "https://")):
            return None
        return f"{where}: {key!r} must be an http(s) URL, got {value!r}"
    return check


def _pause(params: dict[str, Any], where: str) -> str | None:
    seconds = params.get("seconds")
    if isinstance(seconds, int) and not isinstance(seconds, bool) and seconds >= 0:
        return None
    return f"{where}: 'seconds' must be a non-negative integer, got {seconds!r}"


def _digits(params: dict[str, Any], where: str) -> str | None:
    digits = params.get("digits")
    if isinstance(digits, str) and SEND_DIGITS.fullmatch(digits):
        return None
    return f"{where}: 'digits' must be DTMF digits (0-9 * # w), got {digits!r}"


def _gather(params: dict[str, Any], where: str) -> str | None:
    if params.get("input", "speech") not in GATHER_INPUTS:
        return f"{where}: 'input' must be one of {', '.join(sorted(GATHER_INPUTS))}, got {params.get('input')!r}"
    timeout = params.get("timeout", 5)
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout < 0:
        return f"{where}: 'timeout' must be a non-negative number, got {timeout!r}"
    problem = _url("action")(params, where)
    if problem:
        return problem
    prompt = params.get("prompt", [])
    if not isinstance(prompt, list):
        return f"{where}: 'prompt' must be a list of say/play commands"
    for i, raw in enumerate(prompt):
        kind, _ = _command(raw, f"{where}.prompt[{i}]")
        if kind not in ("say", "play", "pause"):
            return f"{where}.prompt[{i}]: a gather prompt holds say, play or pause, not {kind!r}"
    return None


def _any(params: dict[str, Any], where: str) -> str | None:
    return None


_CHECKS = {
    "say": _text,
    "play": _url("url"),
    "pause": _pause,
    "dtmf": _digits,
    "gather": _gather,
    "redirect": _url("url"),
    "hangup": _any,
    "reject": _any,
}
