"""A compiled flow becomes one ``transitions`` AsyncMachine shared by every
call on that flow. Calls are plain models (a ``state`` attribute) that are not
registered with the machine, so holding 10,000 calls costs no bound methods;
each call's events are queued by the runtime's per-call lock."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from transitions.extensions.asyncio import AsyncMachine

if TYPE_CHECKING:
    from .flows import Flow, Transition

log = logging.getLogger(__name__)

GOTO = "__goto__"


class CallModel:
    """The per-call object the machine moves between states."""

    __slots__ = ("fired", "state")

    def __init__(self, state: str):
        self.state = state
        self.fired: Transition | None = None


@dataclass(frozen=True, slots=True)
class Fired:
    transition: Transition | None      # None for a goto
    source: str
    dest: str


class FlowMachine:
    """Chooses transitions for one flow; the runtime runs what they enter."""

    def __init__(self, flow: Flow):
        self.flow = flow
        self._machine = AsyncMachine(
            model=None, states=list(flow.states), initial=flow.initial, auto_transitions=False,
            send_event=True, ignore_invalid_triggers=True, queued=False,
        )
        for transition in flow.transitions:
            source: Any = "*" if transition.sources is None else sorted(transition.sources)
            for event in sorted(transition.on):
                self._machine.add_transition(
                    trigger=event, source=source, dest=transition.dest,
                    conditions=[self._condition(transition)], before=[self._marker(transition)],
                )
        for state in flow.states.values():
            if state.goto:
                self._machine.add_transition(trigger=GOTO, source=state.name, dest=state.goto)

    @staticmethod
    def _condition(transition: Transition) -> Any:
        from .flows import eval_when

        if transition.when is None:
            return lambda _data: True
        return lambda data: eval_when(transition, data.kwargs["ctx"])

    @staticmethod
    def _marker(transition: Transition) -> Any:
        def mark(data: Any) -> None:
            data.model.fired = transition
        return mark

    def handles(self, state: str, event: str) -> bool:
        """True when some transition from ``state`` listens for ``event`` (ignoring `when`)."""
        found = self._machine.events.get(event)
        return bool(found and found.transitions.get(state))

    async def fire(self, model: CallModel, event: str, ctx: Mapping[str, Any]) -> Fired | None:
        """Take the first matching transition, or return None when none matches."""
        trigger = self._machine.events.get(event)
        if trigger is None:
            return None
        source = model.state
        model.fired = None
        if not await trigger.trigger(model, ctx=ctx):
            return None
        return Fired(model.fired, source, model.state)

    async def goto(self, model: CallModel) -> Fired | None:
        source = model.state
        if not self.handles(source, GOTO):
            return None
        await self._machine.events[GOTO].trigger(model, ctx={})
        return Fired(None, source, model.state)
