"""A scripted person on the far end of a call, shared by the mock carrier and
every carrier emulator, so one scenario drives all of them the same way.

A script is a list of steps, consumed in order::

    - answer: {after: 2}        # or: busy: {} / no-answer: {} / fail: {}  (first step only)
    - say: "I'd like a table"   # answers the next open gather with speech
    - digits: "1"               # answers the next open gather with DTMF
    - silence: {}               # lets the next gather time out
    - wait: 3                   # waits before answering the next gather
    - hangup: {}                # hangs up at the next gather
    - hangup: {during: say}     # hangs up while the next <Say> is playing

With the script used up, the callee stays silent at every gather.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Ring = Literal["answer", "busy", "no-answer", "fail"]
RING_STEPS: frozenset[str] = frozenset({"answer", "busy", "no-answer", "fail"})
INPUT_STEPS: frozenset[str] = frozenset({"say", "digits", "silence", "hangup", "wait"})


class ScriptError(ValueError):
    """A callee script that cannot be followed; the message names the step."""


@dataclass(frozen=True, slots=True)
class Response:
    """What the callee does at an open gather."""

    kind: Literal["speech", "digits", "silence", "hangup"]
    value: str = ""
    wait: float = 0.0


@dataclass(slots=True)
class Callee:
    ring: Ring = "answer"
    answer_after: float = 1.0
    steps: list[tuple[str, Any]] = field(default_factory=list)
    heard: list[str] = field(default_factory=list)

    @classmethod
    def from_script(cls, script: Sequence[Mapping[str, Any] | str] | None) -> Callee:
        callee = cls()
        for index, raw in enumerate(script or ()):
            step = {raw: {}} if isinstance(raw, str) else dict(raw)
            if len(step) != 1:
                raise ScriptError(f"callee step {index}: expected one key, got {sorted(step)}")
            ((kind, arg),) = step.items()
            if kind in RING_STEPS:
                if index != 0:
                    raise ScriptError(f"callee step {index}: '{kind}' must be the first step")
                callee.ring = kind  # type: ignore[assignment]  # kind is in RING_STEPS
                callee.answer_after = float((arg or {}).get("after", 1.0)) if isinstance(arg, dict) else float(arg or 0)
            elif kind in INPUT_STEPS:
                callee.steps.append((kind, arg))
            else:
                known = ", ".join(sorted(RING_STEPS | INPUT_STEPS))
                raise ScriptError(f"callee step {index}: unknown step '{kind}' (known: {known})")
        return callee

    def hangs_up_during_say(self) -> bool:
        """True (and consumes the step) when the next step is a hang-up during speech."""
        if self.steps and self.steps[0][0] == "hangup" and (self.steps[0][1] or {}).get("during") == "say":
            self.steps.pop(0)
            return True
        return False

    def at_gather(self, input_: str) -> Response:
        """Consume steps up to the next response to a gather of kind ``input_``."""
        waited = 0.0
        while self.steps:
            kind, arg = self.steps.pop(0)
            if kind == "wait":
                waited += float(arg)
                continue
            if kind == "say":
                if "speech" not in input_:
                    raise ScriptError(f"callee says {arg!r} but the open gather only takes {input_}")
                return Response("speech", str(arg), waited)
            if kind == "digits":
                if "dtmf" not in input_:
                    raise ScriptError(f"callee presses {arg!r} but the open gather only takes {input_}")
                return Response("digits", str(arg), waited)
            if kind == "hangup":
                return Response("hangup", "", waited)
            return Response("silence", "", waited)
        return Response("silence", "", waited)
