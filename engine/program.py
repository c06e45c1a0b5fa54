"""Provider-neutral instructions: what entering a state asks a carrier to do."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

CARRIER_STEPS: frozenset[str] = frozenset({
    "say", "play", "pause", "gather", "hangup", "reject", "dtmf", "stream", "redirect", "keepalive",
})
ENGINE_STEPS: frozenset[str] = frozenset({"reply", "set", "end_call", "goto"})
# A document for a live call must end in one of these, or the carrier hangs up.
DOCUMENT_ENDS: frozenset[str] = frozenset({"gather", "hangup", "reject", "redirect", "keepalive"})


@dataclass(frozen=True, slots=True)
class Step:
    kind: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Program:
    state: str
    steps: tuple[Step, ...] = ()

    @property
    def ends_call(self) -> bool:
        return any(s.kind in ("hangup", "reject") for s in self.steps)

    def with_keepalive(self, seconds: int) -> Program:
        """Append a keep-alive unless the program already ends the document safely."""
        if self.steps and self.steps[-1].kind in DOCUMENT_ENDS:
            return self
        return Program(self.state, (*self.steps, Step("keepalive", {"seconds": seconds})))

    def as_json(self) -> dict[str, Any]:
        return {"state": self.state, "steps": [step_json(s) for s in self.steps]}


def step_json(step: Step) -> dict[str, Any]:
    params = {k: ([step_json(p) for p in v] if k == "prompt" else v) for k, v in step.params.items()}
    return {step.kind: params}
