"""Broken flows: every problem is reported, located, with a close match."""

from __future__ import annotations

import textwrap

import pytest

from voicecall.engine.errors import FlowError
from voicecall.engine.flows import load_flow_text


def problems(text: str) -> list[str]:
    with pytest.raises(FlowError) as info:
        load_flow_text(textwrap.dedent(text), "t.yaml")
    return [p.format() for p in info.value.problems]


def warnings(text: str) -> list[str]:
    return [p.format() for p in load_flow_text(textwrap.dedent(text), "t.yaml").warnings]


# A flow that loads: one waiting state with a hang-up exit.
BASE = """\
flow: t
initial: a
states:
  a:
    do:
      - say: hi
  completed: {final: true}
transitions:
  - {on: call.ended, to: completed}
"""


def test_base_loads_clean() -> None:
    assert warnings(BASE) == []


CASES: list[tuple[str, str, list[str]]] = [
    ("unknown action", BASE.replace("- say: hi", "- sya: hi"),
     ["t.yaml:6: $.states.a.do[0]: unknown action 'sya' (did you mean 'say'?)"]),
    ("unknown event", BASE.replace("on: call.ended", "on: call.endd"),
     ["t.yaml:9: $.transitions[0].on: unknown event 'call.endd' (did you mean 'call.ended'?)"]),
    ("unknown state in to", BASE.replace("to: completed", "to: complete"),
     ["t.yaml:9: $.transitions[0].to: unknown state 'complete' (did you mean 'completed'?)"]),
    ("unknown state in from", BASE.replace("{on: call.ended,", "{on: call.ended, from: [a, compleeted],"),
     ["t.yaml:9: $.transitions[0].from[1]: unknown state 'compleeted' "
      "(did you mean 'completed'?)"]),
    ("unknown initial", BASE.replace("initial: a", "initial: start"),
     ["t.yaml:2: $.initial: unknown state 'start'"]),
    ("unknown goto target", BASE.replace("- say: hi", "- say: hi\n      - goto: compleet"),
     ["t.yaml:7: $.states.a.do[1]: unknown state 'compleet' (did you mean 'completed'?)"]),
    ("template syntax error", BASE.replace("say: hi", 'say: "{{ call.message }"'),
     ["t.yaml:6: $.states.a.do[0].say: template syntax error: unexpected '}'"]),
    ("undeclared var", BASE.replace("say: hi", 'say: "Hi {{ vars.name }}"'),
     ["t.yaml:6: $.states.a.do[0].say: undeclared variable 'vars.name' "
      "(declare it under vars.properties)"]),
    ("unknown template name", BASE.replace("say: hi", 'say: "{{ caller.name }}"'),
     ["t.yaml:6: $.states.a.do[0].say: unknown name 'caller' in template (did you mean "
      "'call'?) (allowed: call, config, event, state, turn, vars)"]),
    ("unknown call field", BASE.replace("say: hi", 'say: "{{ call.mesage }}"'),
     ["t.yaml:6: $.states.a.do[0].say: unknown field 'call.mesage' "
      "(did you mean 'call.message'?)"]),
    ("unreachable state", BASE.replace("  completed:", "  b: {do: [say: x]}\n  completed:"),
     ["t.yaml:7: $.states.b: state 'b' is unreachable from the initial state 'a'"]),
    ("dead end", """\
        flow: t
        initial: a
        states:
          a: {do: [{gather: {input: dtmf}}]}
          b: {do: [say: bye]}
          completed: {final: true}
        transitions:
          - {on: dtmf, from: a, to: b}
          - {on: call.ended, from: a, to: completed}
        """,
     ["t.yaml:5: $.states.b: state 'b' is a dead end: it is not final and no transition "
      "or goto leaves it"]),
    ("waiting without timeout", """\
        flow: t
        initial: a
        states:
          a: {do: [{gather: {input: dtmf}}]}
          completed: {final: true}
        transitions:
          - {on: dtmf, from: a, to: completed}
        """,
     ["t.yaml:4: $.states.a: state 'a' waits but has no timeout or hang-up exit (add an "
      "'after' timer, a gather.timeout or a call.ended transition)"]),
    ("opening state with gather", BASE.replace("  a:\n", "  a:\n    opening: true\n")
     .replace("- say: hi", "- gather: {input: speech}"),
     ["t.yaml:7: $.states.a.do[0]: action 'gather' is not allowed in opening state 'a' "
      "(allowed: say, play, pause, hangup, goto)"]),
    ("opening state uses event", BASE.replace("  a:\n", "  a:\n    opening: true\n")
     .replace("say: hi", 'say: "{{ event.text }}"'),
     ["t.yaml:7: $.states.a.do[0].say: opening state 'a' cannot use event data (it is "
      "rendered before the call is answered)"]),
    ("say on the way into an opening state", BASE.replace("  a:\n", "  a:\n    opening: true\n")
     .replace("  - {on: call.ended, to: completed}",
              "  - {on: call.ended, to: completed}\n  - {on: call.answered, to: a, do: [say: x]}"),
     ["t.yaml:11: $.transitions[1].do[0]: action 'say' cannot run on the way into opening "
      "state 'a' (its program is sent when the call is placed)"]),
    ("supervisor uses say", BASE.replace("flow: t", "flow: t\nkind: supervisor"),
     ["t.yaml:7: $.states.a.do[0]: action 'say' is not allowed in a supervisor flow "
      "(allowed: end_call, set, goto)"]),
    ("duplicate key", BASE.replace("initial: a", "initial: a\ninitial: a"),
     ["t.yaml:3: $.initial: duplicate key 'initial'"]),
    ("wrong type", BASE.replace("  a:\n", "  a:\n    opening: yes\n"),
     ["t.yaml:5: $.states.a.opening: 'yes' is not of type 'boolean'"]),
    ("missing key", BASE.replace("initial: a\n", ""),
     ["t.yaml:1: $: missing required key 'initial'"]),
    ("unknown state key", BASE.replace("    do:", "    doo:"),
     ["t.yaml:5: $.states.a: unknown key 'doo' (did you mean 'do'?)"]),
    ("unknown top-level key", BASE + "varz: {}\n",
     ["t.yaml:10: $: unknown key 'varz' (did you mean 'vars'?)"]),
    ("two keys in one action", BASE.replace("- say: hi", "- {say: hi, pause: 1}"),
     ["t.yaml:6: $.states.a.do[0]: an action has exactly one key (say, play, gather, ...), "
      "found 2: 'say', 'pause'"]),
    ("bare action word", BASE.replace("- say: hi", "- hangup"),
     ["t.yaml:6: $.states.a.do[0]: an action is a mapping: write 'hangup: ...' "
      "(e.g. 'hangup: {}'), not 'hangup'"]),
    ("action not a mapping", BASE.replace("- say: hi", "- 42"),
     ["t.yaml:6: $.states.a.do[0]: expected an action such as 'say: TEXT', got 42"]),
    ("say of wrong type", BASE.replace("say: hi", "say: 5"),
     ["t.yaml:6: $.states.a.do[0].say: 5 is not of type 'string' or 'object'"]),
    ("gather input enum", BASE.replace("- say: hi", "- gather: {input: voice}"),
     ["t.yaml:6: $.states.a.do[0].gather.input: 'voice' is not allowed here "
      "(one of: speech, dtmf, both, speech dtmf)"]),
    ("when in braces", BASE.replace("to: completed}", "to: completed, when: '{{ x }}'}"),
     ["t.yaml:9: $.transitions[0].when: 'when' is a Jinja expression: write it without {{ }}"]),
    ("when syntax error", BASE.replace("to: completed}", "to: completed, when: 'event.reason =='}"),
     ["t.yaml:9: $.transitions[0].when: template syntax error: "
      "unexpected 'end of print statement'"]),
    ("set of undeclared var", BASE.replace("- say: hi", "- set: {tries: 1}"),
     ["t.yaml:6: $.states.a.do[0]: set of undeclared variable 'tries' "
      "(declare it under vars.properties)"]),
    ("bad dtmf digits", BASE.replace("- say: hi", "- dtmf: 12a"),
     ["t.yaml:6: $.states.a.do[0].dtmf: DTMF digits must match [0-9*#wW]+, got '12a'"]),
    ("redirect to http", BASE.replace("- say: hi", "- redirect: http://example.com/x"),
     ["t.yaml:6: $.states.a.do[0]: redirect target must be a state name or a literal https "
      "URL, got 'http://example.com/x'"]),
    ("goto not last", BASE.replace("- say: hi", "- goto: completed\n      - say: hi"),
     ["t.yaml:6: $.states.a.do[0]: goto must be the last action of a state"]),
    ("goto in a transition", BASE.replace("to: completed}", "to: completed, do: [goto: a]}"),
     ["t.yaml:9: $.transitions[0].do[0]: goto is only allowed in a state's do"]),
    ("leaving a final state", BASE + "  - {on: dtmf, from: completed, to: a}\n",
     ["t.yaml:10: $.transitions[1].from: final state 'completed' cannot be left"]),
    ("pause not a number", BASE.replace("- say: hi", "- pause: soon"),
     ["t.yaml:6: $.states.a.do[0].pause: expected whole seconds or a template, got 'soon'"]),
    ("end_call reason", BASE.replace("flow: t", "flow: t\nkind: supervisor")
     .replace("- say: hi", "- end_call: {reason: tired}"),
     ["t.yaml:7: $.states.a.do[0]: end_call reason 'tired' is not a terminal state name"]),
    ("gather prompt holds hangup", BASE.replace("- say: hi", "- gather: {prompt: [hangup: {}]}"),
     ["t.yaml:6: $.states.a.do[0].gather.prompt[0]: a gather prompt holds only say and play, "
      "not 'hangup'"]),
    ("invalid vars schema", BASE + "vars: {type: objet}\n",
     ["t.yaml:10: $.vars.type: invalid vars schema: 'objet' is not valid under any of the "
      "given schemas"]),
    ("two opening states", BASE.replace("  a:\n", "  a:\n    opening: true\n").replace(
        "    do:", "    do:\n      - goto: b\n  b:\n    opening: true\n    do:", 1),
     ["t.yaml:9: $.states.b.opening: only one opening state is allowed (already 'a')"]),
    ("yaml syntax error", "flow: t\nstates: [a\n",
     ["t.yaml:3: $: invalid YAML: expected ',' or ']', but got '<stream end>'"]),
    ("empty file", "", ["t.yaml: $: flow file is empty"]),
]


@pytest.mark.parametrize(("text", "expected"), [(t, e) for _, t, e in CASES],
                         ids=[name for name, _, _ in CASES])
def test_broken_flow_reports(text: str, expected: list[str]) -> None:
    assert problems(text) == expected


def test_every_problem_is_reported_not_just_the_first() -> None:
    text = BASE.replace("on: call.ended", "on: call.endd").replace(
        "say: hi", 'say: "{{ vars.who }}"').replace("initial: a", "initial: b")
    assert problems(text) == [
        "t.yaml:2: $.initial: unknown state 'b'",
        "t.yaml:6: $.states.a.do[0].say: undeclared variable 'vars.who' "
        "(declare it under vars.properties)",
        "t.yaml:9: $.transitions[0].on: unknown event 'call.endd' (did you mean 'call.ended'?)",
    ]


def test_all_schema_errors_are_reported() -> None:
    text = BASE.replace("- say: hi", "- sya: hi\n      - pause: [1]").replace(
        "  a:\n", "  a:\n    final: maybe\n")
    assert problems(text) == [
        "t.yaml:5: $.states.a.final: 'maybe' is not of type 'boolean'",
        "t.yaml:7: $.states.a.do[0]: unknown action 'sya' (did you mean 'say'?)",
        "t.yaml:8: $.states.a.do[1].pause: [1] is not of type 'integer' or 'string'",
    ]


def test_lint_warnings_do_not_stop_loading() -> None:
    text = BASE.replace("completed", "finished").replace(
        "  a:\n", "  a:\n    after: [{seconds: 5, event: nudge}]\n")
    assert warnings(text) == [
        "t.yaml:5: $.states.a.after[0].event: warning: timer 'nudge' fires but no transition "
        "handles 'timer.nudge' in state 'a'",
        "t.yaml:8: $.states.finished: warning: final state 'finished' is not a terminal state "
        "name (completed, hangup-user, hangup-bot, timeout, error, failed, no-answer, busy, "
        "voicemail)",
    ]


def test_supervisor_final_states_need_no_terminal_name() -> None:
    text = BASE.replace("flow: t", "flow: t\nkind: supervisor").replace(
        "- say: hi", "- set: {n: 1}").replace("completed", "done") + \
        "vars: {type: object, properties: {n: {type: integer}}}\n"
    assert warnings(text) == []


def test_timer_event_not_armed_is_a_warning() -> None:
    text = BASE + "  - {on: timer.late, from: a, to: completed}\n"
    assert warnings(text) == ["t.yaml:10: $.transitions[1].on: warning: no state arms timer 'late'"]


def test_unhandled_results_are_warnings() -> None:
    text = BASE.replace("- say: hi", "- gather: {input: both}").replace(
        "  completed:", "  b: {do: [reply: {}]}\n  completed:") + \
        "  - {on: dtmf, from: a, to: b}\n  - {on: reply.ready, from: b, to: a}\n"
    assert warnings(text) == [
        "t.yaml:4: $.states.a: warning: state 'a' gathers speech but no transition handles "
        "'speech.final' in it",
        "t.yaml:7: $.states.b: warning: state 'b' asks the responder but does not handle "
        "'reply.failed'",
    ]
