"""Second pass: semantics and graph lint on a flow that passed the schema.

Checks every state name, event, action placement and template name, then
the graph: unreachable states, dead ends, and waiting states with no way
out when the caller goes quiet or hangs up.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from voicecall.engine import yamlio
from voicecall.engine.errors import Problem
from voicecall.engine.events import EVENT_TYPES, TERMINAL_STATES, TIMER_PREFIX, is_known_event

from .model import Action, Flow, State
from .problems import Reporter, did_you_mean
from .render import CONTEXT_NAMES, Tpl, is_template

CALL_FIELDS = frozenset({"id", "from", "to", "direction", "mode", "flow", "message", "turnCount",
                         "answeredAt", "provider", "route"})
CONFIG_FIELDS = frozenset({"outbound", "inboundGreeting", "maxDurationSeconds",
                           "staleCallReaperSeconds", "transcriptTimeoutMs", "ringTimeoutMs",
                           "silenceTimeoutMs", "responseTimeoutMs"})
TURN_FIELDS = frozenset({"token", "awaited"})
OPENING_ACTIONS = ("say", "play", "pause", "hangup", "goto")
SUPERVISOR_ACTIONS = ("end_call", "set", "goto")
PROMPT_ACTIONS = ("say", "play")


@dataclass(frozen=True, slots=True)
class TemplateUse:
    path: yamlio.Path
    tpl: Tpl
    owner: str  # "state:NAME", "timer:NAME", "transition" or "when"


def check(flow: Flow, data: Mapping[str, Any], report: Reporter) -> None:
    declared = _check_vars(data, report)
    states = flow.states
    if flow.initial not in states:
        report.error(("initial",), f"unknown state {flow.initial!r}{did_you_mean(flow.initial, states)}")
    _check_states(flow, report)
    _check_opening_entries(flow, report)
    _check_transitions(flow, data, report)
    _check_actions(flow, declared, report)
    _check_templates(flow, declared, report)
    if not report.errors():
        _check_graph(flow, report)
        _check_goto_loops(flow, report)


def _at(report: Reporter, action: Action, message: str, warning: bool = False) -> None:
    problem = Problem(report.file, action.line, action.path, message, warning)
    if problem not in report.problems:
        report.problems.append(problem)


def _check_vars(data: Mapping[str, Any], report: Reporter) -> frozenset[str]:
    schema = data.get("vars", {})
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        report.error(("vars", *exc.path), f"invalid vars schema: {exc.message}")
        return frozenset()
    if schema.get("type", "object") != "object":
        report.error(("vars", "type"), "vars must describe an object (type: object)")
    return frozenset(schema.get("properties", {}))


def _check_states(flow: Flow, report: Reporter) -> None:
    openings = [s for s in flow.states.values() if s.opening]
    for state in openings[1:]:
        report.error(("states", state.name, "opening"),
                     f"only one opening state is allowed (already {openings[0].name!r})")
    for state in flow.states.values():
        path = ("states", state.name)
        if state.opening and flow.kind == "supervisor":
            report.error((*path, "opening"), "a supervisor flow has no opening state")
        if state.opening:
            for action in state.do:
                if action.kind not in OPENING_ACTIONS:
                    _at(report, action, f"action {action.kind!r} is not allowed in opening state "
                        f"{state.name!r} (allowed: {', '.join(OPENING_ACTIONS)})")
        gotos = [a for a in state.do if a.kind == "goto"]
        for action in gotos[1:]:
            _at(report, action, "only one goto per state")
        if gotos and state.do[-1] is not gotos[0]:
            _at(report, gotos[0], "goto must be the last action of a state")
        seen: set[str] = set()
        for i, timer in enumerate(state.after):
            if timer.event in seen:
                report.error((*path, "after", i, "event"), f"timer {timer.event!r} is armed twice")
            seen.add(timer.event)
            if timer.event_type not in flow.handles(state.name):
                report.warn((*path, "after", i, "event"),
                            f"timer {timer.event!r} fires but no transition handles "
                            f"{timer.event_type!r} in state {state.name!r}")


def _check_opening_entries(flow: Flow, report: Reporter) -> None:
    """The opening program is sent when the call is placed; a transition into
    that state cannot add carrier steps (they would never be sent)."""
    for transition in flow.transitions:
        dest = flow.states.get(transition.dest)
        if dest is None or not dest.opening or "call.answered" not in transition.on:
            continue
        for action in transition.do:
            if action.kind not in ("set", "reply", "end_call"):
                _at(report, action, f"action {action.kind!r} cannot run on the way into opening "
                    f"state {dest.name!r} (its program is sent when the call is placed)")


def _check_transitions(flow: Flow, data: Mapping[str, Any], report: Reporter) -> None:
    states = flow.states
    armed = {t.event_type for s in states.values() for t in s.after}
    vocabulary = [*EVENT_TYPES, *armed]
    for i, raw in enumerate(data.get("transitions", [])):
        path: yamlio.Path = ("transitions", i)
        on = [raw["on"]] if isinstance(raw["on"], str) else raw["on"]
        for j, event in enumerate(on):
            epath = (*path, "on") if isinstance(raw["on"], str) else (*path, "on", j)
            if not is_known_event(event):
                report.error(epath, f"unknown event {event!r}{did_you_mean(event, vocabulary)}")
            elif event.startswith(TIMER_PREFIX) and event not in armed:
                report.warn(epath, f"no state arms timer {event[len(TIMER_PREFIX):]!r}")
        sources = raw.get("from", "*")
        if isinstance(sources, list):
            for j, name in enumerate(sources):
                _state_ref(flow, name, (*path, "from", j), report, source=True)
        elif sources != "*":
            _state_ref(flow, sources, (*path, "from"), report, source=True)
        _state_ref(flow, raw["to"], (*path, "to"), report)


def _state_ref(flow: Flow, name: str, path: yamlio.Path, report: Reporter, *,
               source: bool = False) -> None:
    if name == "*" and source:
        report.error(path, "'*' must stand alone: from: \"*\"")
    elif name not in flow.states:
        report.error(path, f"unknown state {name!r}{did_you_mean(name, flow.states)}")
    elif source and flow.states[name].final:
        report.error(path, f"final state {name!r} cannot be left")


def _owned_actions(flow: Flow) -> Iterator[tuple[Action, str]]:
    for state in flow.states.values():
        for action in state.do:
            yield action, "state"
            for prompt in action.args.get("prompt", ()) if action.kind == "gather" else ():
                yield prompt, "prompt"
    for transition in flow.transitions:
        for action in transition.do:
            yield action, "transition"
            for prompt in action.args.get("prompt", ()) if action.kind == "gather" else ():
                yield prompt, "prompt"


def _check_actions(flow: Flow, declared: frozenset[str], report: Reporter) -> None:
    for action, owner in _owned_actions(flow):
        kind = action.kind
        if flow.kind == "supervisor" and kind not in SUPERVISOR_ACTIONS:
            _at(report, action, f"action {kind!r} is not allowed in a supervisor flow "
                f"(allowed: {', '.join(SUPERVISOR_ACTIONS)})")
        if owner == "prompt" and kind not in PROMPT_ACTIONS:
            _at(report, action, f"a gather prompt holds only say and play, not {kind!r}")
        if kind == "goto" and owner != "state":
            _at(report, action, "goto is only allowed in a state's do")
        target = action.args.get("state")
        if kind in ("goto", "redirect") and target is not None:
            if is_template(target) or target.startswith(("http://", "https://")):
                _at(report, action, f"{kind} target must be a state name"
                    + (" or a literal https URL" if kind == "redirect" else "") + f", got {target!r}")
            elif target not in flow.states:
                _at(report, action, f"unknown state {target!r}{did_you_mean(target, flow.states)}")
        if kind == "set":
            for name in action.args:
                if name not in declared:
                    _at(report, action, f"set of undeclared variable {name!r} "
                        f"(declare it under vars.properties){did_you_mean(name, declared)}")
        reason = action.args.get("reason")
        if kind == "end_call" and isinstance(reason, str) and reason not in TERMINAL_STATES:
            _at(report, action, f"end_call reason {reason!r} is not a terminal state name"
                f"{did_you_mean(reason, TERMINAL_STATES)}")


def _check_templates(flow: Flow, declared: frozenset[str], report: Reporter) -> None:
    fields = {"call": CALL_FIELDS, "config": CONFIG_FIELDS, "turn": TURN_FIELDS}
    for use in flow.templates:
        assert isinstance(use, TemplateUse)
        for name in sorted(use.tpl.names - CONTEXT_NAMES):
            report.error(use.path, f"unknown name {name!r} in template"
                         f"{did_you_mean(name, CONTEXT_NAMES)} (allowed: "
                         f"{', '.join(sorted(CONTEXT_NAMES))})")
        for base, attr in sorted(use.tpl.attrs):
            if base == "vars" and attr not in declared:
                report.error(use.path, f"undeclared variable 'vars.{attr}' (declare it under "
                             f"vars.properties){did_you_mean(attr, declared)}")
            elif base in fields and attr not in fields[base]:
                close = did_you_mean(f"{base}.{attr}", (f"{base}.{f}" for f in fields[base]))
                report.error(use.path, f"unknown field '{base}.{attr}'{close}")
        if use.owner.startswith("state:"):
            state = flow.states.get(use.owner[6:])
            if state is not None and state.opening and "event" in use.tpl.names:
                report.error(use.path, f"opening state {state.name!r} cannot use event data "
                             "(it is rendered before the call is answered)")


def _check_graph(flow: Flow, report: Reporter) -> None:
    reached = {flow.initial}
    todo = [flow.initial]
    while todo:
        name = todo.pop()
        for dest in _exits(flow, name):
            if dest not in reached:
                reached.add(dest)
                todo.append(dest)
    for name, state in flow.states.items():
        path = ("states", name)
        if name not in reached:
            report.error(path, f"state {name!r} is unreachable from the initial state {flow.initial!r}")
            continue
        if state.final:
            if flow.kind == "call" and name not in TERMINAL_STATES:
                report.warn(path, f"final state {name!r} is not a terminal state name "
                            f"({', '.join(TERMINAL_STATES)}){did_you_mean(name, TERMINAL_STATES)}")
            continue
        _check_results(flow, state, report)
        if not _exits(flow, name):
            report.error(path, f"state {name!r} is a dead end: it is not final and no "
                         "transition or goto leaves it")
        elif (state.gathers or state.goto is None) and not _has_timeout_exit(flow, name):
            report.error(path, f"state {name!r} waits but has no timeout or hang-up exit (add an "
                         "'after' timer, a gather.timeout or a call.ended transition)")


def _check_goto_loops(flow: Flow, report: Reporter) -> None:
    """A chain of gotos that comes back to where it started never waits for the caller."""
    reported: set[str] = set()
    for start in flow.states:
        chain, name = [start], flow.states[start].goto
        while name is not None and name not in chain and flow.states[name].goto is not None:
            chain.append(name)
            name = flow.states[name].goto
        if name == start and start not in reported:
            reported.update(chain)
            loop = " -> ".join([*chain, start])
            report.error(("states", start), f"goto loop {loop}: these states never wait for the caller")


def _check_results(flow: Flow, state: State, report: Reporter) -> None:
    """A state that gathers or asks the responder should handle the answer."""
    handled = flow.handles(state.name)
    path = ("states", state.name)
    for action in state.do:
        if action.kind == "gather":
            wanted = {"speech": "speech.final", "dtmf": "dtmf"}
            for word in str(action.args["input"]).split():
                if wanted[word] not in handled:
                    report.warn(path, f"state {state.name!r} gathers {word} but no transition "
                                f"handles {wanted[word]!r} in it")
        if action.kind == "reply" and not {"reply.ready", "reply.failed"} <= handled:
            missing = sorted({"reply.ready", "reply.failed"} - handled)
            report.warn(path, f"state {state.name!r} asks the responder but does not handle "
                        f"{' or '.join(repr(m) for m in missing)}")


def _exits(flow: Flow, name: str) -> set[str]:
    state = flow.states[name]
    out = {t.dest for t in flow.transitions if not state.final and t.applies_to(name)}
    out.update(a.args["state"] for a in state.do
               if a.kind in ("goto", "redirect") and "state" in a.args)
    return out


def _has_timeout_exit(flow: Flow, name: str) -> bool:
    state = flow.states[name]
    handled = flow.handles(name)
    if "call.ended" in handled:
        return True
    if state.gathers and "gather.timeout" in handled:
        return True
    return any(t.event_type in handled for t in state.after)
