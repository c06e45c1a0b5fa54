"""The compiled flow: frozen, slotted, built once per file by the loader.

Templates inside ``Action.args``, ``TimerSpec.seconds`` and
``Transition.when`` are already compiled (see ``render.Tpl``); the runtime
never compiles anything per call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from voicecall.engine.errors import Problem

FlowKind = Literal["call", "supervisor"]


@dataclass(frozen=True, slots=True)
class Action:
    """One entry of a ``do`` list. ``path`` is its JSON path in the file."""

    kind: str
    args: Mapping[str, Any]
    file: str
    line: int | None
    path: str

    def __post_init__(self) -> None:
        if not isinstance(self.args, MappingProxyType):
            object.__setattr__(self, "args", MappingProxyType(dict(self.args)))

    def __hash__(self) -> int:
        # args is a mapping; an action is identified by where it is written.
        return hash((self.kind, self.file, self.path))


@dataclass(frozen=True, slots=True)
class TimerSpec:
    """``after: [{seconds, event}]``: fires ``timer.<event>``."""

    event: str
    seconds: Any  # int, or a compiled template rendering to an int

    @property
    def event_type(self) -> str:
        return f"timer.{self.event}"


@dataclass(frozen=True, slots=True)
class State:
    name: str
    do: tuple[Action, ...] = ()
    opening: bool = False
    final: bool = False
    after: tuple[TimerSpec, ...] = ()
    tags: frozenset[str] = frozenset()
    goto: str | None = None

    @property
    def gathers(self) -> bool:
        return any(a.kind == "gather" for a in self.do)


@dataclass(frozen=True, slots=True)
class Transition:
    on: frozenset[str]
    sources: frozenset[str] | None  # None means "*": every non-final state
    dest: str
    when: Any | None = None  # compiled Jinja expression (render.Expr)
    do: tuple[Action, ...] = ()
    line: int | None = None

    def applies_to(self, state: str) -> bool:
        return self.sources is None or state in self.sources


# Which provider capability each action (or gather input) needs.
_CAPABILITY = {"say": "say", "play": "play", "dtmf": "dtmf", "stream": "stream", "reject": "reject"}


@dataclass(frozen=True, slots=True)
class Flow:
    name: str
    mode: str
    kind: FlowKind
    description: str
    initial: str
    states: Mapping[str, State]
    transitions: tuple[Transition, ...]
    vars_schema: Mapping[str, Any]
    source: str
    hash: str
    file: str
    # Lint warnings (the file loaded, but something looks wrong).
    warnings: tuple[Any, ...] = field(default=(), repr=False, compare=False)
    # Every compiled template with where it sits (used by lint and tooling).
    templates: tuple[Any, ...] = field(default=(), repr=False, compare=False)
    _index: Mapping[tuple[str, str], tuple[Transition, ...]] = field(
        default_factory=dict, repr=False, compare=False)

    def __hash__(self) -> int:
        return hash((self.name, self.hash, self.file))

    def __post_init__(self) -> None:
        object.__setattr__(self, "states", MappingProxyType(dict(self.states)))
        # Precompute (state, event) -> transitions in file order: the runtime
        # asks on every event, so this must not scan the list.
        index: dict[tuple[str, str], list[Transition]] = {}
        for transition in self.transitions:
            names = transition.sources if transition.sources is not None else [
                n for n, s in self.states.items() if not s.final]
            for state in names:
                for event in transition.on:
                    index.setdefault((state, event), []).append(transition)
        object.__setattr__(self, "_index", {k: tuple(v) for k, v in index.items()})

    def transitions_for(self, state: str, event: str) -> tuple[Transition, ...]:
        """Candidate transitions for ``event`` in ``state``, in file order."""
        return self._index.get((state, event), ())

    def handles(self, state: str) -> frozenset[str]:
        """Every event type some transition accepts in ``state``."""
        return frozenset(e for (s, e) in self._index if s == state)

    def actions(self) -> list[Action]:
        """Every action in the flow (states, transitions, gather prompts)."""
        out: list[Action] = []
        for state in self.states.values():
            out.extend(state.do)
        for transition in self.transitions:
            out.extend(transition.do)
        nested = [p for a in out if a.kind == "gather" for p in a.args.get("prompt", ())]
        return out + nested

    def capability_uses(self) -> list[tuple[str, Action]]:
        """(capability, the action that needs it) for every action of this flow."""
        uses: list[tuple[str, Action]] = []
        for action in self.actions():
            if action.kind in _CAPABILITY:
                uses.append((_CAPABILITY[action.kind], action))
            elif action.kind == "gather":
                words = str(action.args.get("input", "speech")).replace("both", "speech dtmf").split()
                uses.extend((f"gather.{word}", action) for word in words)
        return uses

    def required_capabilities(self) -> frozenset[str]:
        """Provider capabilities this flow needs, derived from its actions."""
        return frozenset(cap for cap, _ in self.capability_uses())

    def unsupported(self, provider: str, capabilities: frozenset[str]) -> list[Problem]:
        """One problem per action this carrier cannot do, at the action's line."""
        return [Problem(action.file, action.line, action.path,
                        f"{action.kind} needs {cap}, which the {provider} carrier cannot do")
                for cap, action in self.capability_uses() if cap not in capabilities]
