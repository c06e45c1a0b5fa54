"""Rendering compiled actions into steps: params, data stays data, sandbox."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicecall.engine.errors import RenderError
from voicecall.engine.flows import (
    Flow,
    eval_when,
    load_flow_text,
    render_actions,
    timer_seconds,
    validate_vars,
    vars_with_defaults,
)
from voicecall.engine.program import Step

CONFIG = {"outbound": {"notifyHangupDelaySec": 3}, "silenceTimeoutMs": 800,
          "maxDurationSeconds": 300, "staleCallReaperSeconds": 0}


def flow_with(actions: str, vars_schema: str = "{}") -> Flow:
    head = f"flow: t\ninitial: a\nvars: {vars_schema}\nstates:\n  a:\n    do:\n"
    tail = textwrap.dedent("""\
          b: {do: [say: x]}
          completed: {final: true}
        transitions:
          - {on: dtmf, from: a, to: b}
          - {on: call.ended, to: completed}
        """)
    body = textwrap.indent(textwrap.dedent(actions).rstrip("\n") + "\n", "      ")
    return load_flow_text(head + body + tail, "t.yaml")


def render(actions: str, ctx: dict[str, Any] | None = None, vars_schema: str = "{}") -> list[Step]:
    flow = flow_with(actions, vars_schema)
    return render_actions(flow.states["a"].do, ctx or {})


def test_say_forms() -> None:
    steps = render("""\
        - say: Hello
        - say: {text: "Hi {{ call.to }}", voice: Polly.Joanna, language: en-US}
        """, {"call": {"to": "+15550001111"}})
    assert steps == [Step("say", {"text": "Hello"}),
                     Step("say", {"text": "Hi +15550001111", "voice": "Polly.Joanna",
                                  "language": "en-US"})]


def test_runtime_data_is_never_a_template() -> None:
    steps = render('- say: "{{ call.message }}"',
                   {"call": {"message": "{{7*7}} {% for x in y %}{{ config }}"}})
    assert steps == [Step("say", {"text": "{{7*7}} {% for x in y %}{{ config }}"})]


def test_empty_say_and_zero_pause_are_dropped() -> None:
    steps = render("""\
        - say: "{{ call.message }}"
        - pause: "{{ config.outbound.notifyHangupDelaySec }}"
        - hangup: {}
        """, {"call": {"message": "  "}, "config": {"outbound": {"notifyHangupDelaySec": 0}}})
    assert steps == [Step("hangup", {})]


def test_none_is_not_spoken_as_none() -> None:
    steps = render('- say: "Hi {{ call.message }}!"', {"call": {"message": None}})
    assert steps == [Step("say", {"text": "Hi !"})]


def test_play_pause_hangup_reject_dtmf_stream_redirect_reply() -> None:
    steps = render("""\
        - play: https://example.com/a.mp3
        - play: {url: https://example.com/b.mp3, loop: 2}
        - pause: 4
        - pause: "{{ config.outbound.notifyHangupDelaySec }}"
        - dtmf: "{{ event.digits }}"
        - dtmf: 12w#
        - stream: {url: "wss://x.example/{{ call.id }}", parameters: {who: "{{ call.to }}"}}
        - reply: {}
        - reject: {}
        - reject: {reason: busy}
        - redirect: https://example.com/next
        - redirect: b
        """, {"config": CONFIG, "event": {"digits": "9*"}, "call": {"id": "c1", "to": "+1555"}})
    assert steps == [
        Step("play", {"url": "https://example.com/a.mp3"}),
        Step("play", {"url": "https://example.com/b.mp3", "loop": 2}),
        Step("pause", {"seconds": 4}),
        Step("pause", {"seconds": 3}),
        Step("dtmf", {"digits": "9*"}),
        Step("dtmf", {"digits": "12w#"}),
        Step("stream", {"url": "wss://x.example/c1", "parameters": {"who": "+1555"}}),
        Step("reply", {}),
        Step("reject", {"reason": "rejected"}),
        Step("reject", {"reason": "busy"}),
        Step("redirect", {"url": "https://example.com/next"}),
        Step("redirect", {"state": "b"}),
    ]


def test_gather_params() -> None:
    steps = render("""\
        - gather:
            input: both
            numDigits: 1
            finishOnKey: "#"
            language: en-GB
            speechTimeout: "{{ ((config.silenceTimeoutMs / 1000) | round(0, 'ceil')) | int }}"
            prompt:
              - say: Press one
              - play: https://example.com/beep.wav
        - gather: {input: dtmf}
        """, {"config": CONFIG})
    assert steps == [
        Step("gather", {"input": "speech dtmf", "timeout": 5, "numDigits": 1, "finishOnKey": "#",
                        "language": "en-GB", "speechTimeout": 1,
                        "prompt": (Step("say", {"text": "Press one"}),
                                   Step("play", {"url": "https://example.com/beep.wav"})),
                        "token": None}),
        Step("gather", {"input": "dtmf", "timeout": 5, "prompt": (), "token": None}),
    ]


def test_set_keeps_native_values_and_end_call_goto() -> None:
    schema = "{type: object, properties: {n: {type: integer}, who: {type: string}, ok: {}}}"
    steps = render("""\
        - set: {n: "{{ (vars.n | default(0)) + 1 }}", who: "x{{ vars.n }}", ok: true}
        - end_call: {reason: timeout}
        - goto: b
        """, {"vars": {"n": 4}}, schema)
    assert steps == [Step("set", {"n": 5, "who": "x4", "ok": True}),
                     Step("end_call", {"reason": "timeout"}),
                     Step("goto", {"state": "b"})]


def test_undefined_name_is_a_render_error_with_location() -> None:
    with pytest.raises(RenderError) as info:
        render('- say: "{{ call.message }}"', {"call": {}})
    assert str(info.value) == ("t.yaml:7: $.states.a.do[0]: cannot render say: "
                               "'dict object' has no attribute 'message'")


def test_sandbox_blocks_dunder_access() -> None:
    with pytest.raises(RenderError) as info:
        render("""- say: "{{ ''.__class__ }}\"""")
    assert "unsafe" in str(info.value)
    with pytest.raises(RenderError, match="unsafe"):
        render('- say: "{{ call.message.__class__.__mro__ }}"', {"call": {"message": "x"}})


def test_sandbox_is_immutable() -> None:
    schema = "{type: object, properties: {n: {}, seen: {}}}"
    seen: list[int] = []
    with pytest.raises(RenderError, match="unsafe"):
        render('- set: {n: "{{ vars.seen.append(1) }}"}', {"vars": {"seen": seen}}, schema)
    assert seen == []


@pytest.mark.parametrize(("actions", "ctx", "message"), [
    ('- dtmf: "{{ event.digits }}"', {"event": {"digits": "12; rm"}},
     "cannot render dtmf: DTMF digits must match [0-9*#wW]+, got '12; rm'"),
    ('- pause: "{{ call.message }}"', {"call": {"message": "soon"}},
     "cannot render pause: pause seconds must be a whole number, got 'soon'"),
    ('- pause: "{{ -2 }}"', {}, "cannot render pause: pause seconds must be at least 0, got -2"),
    ("- gather: {timeout: \"{{ 0 }}\"}", {}, "gather timeout must be at least 1, got 0"),
])
def test_bad_rendered_values(actions: str, ctx: dict[str, Any], message: str) -> None:
    with pytest.raises(RenderError) as info:
        render(actions, ctx)
    assert message in str(info.value)


def test_eval_when_and_timer_seconds() -> None:
    flow = load_flow_text(textwrap.dedent("""\
        flow: t
        initial: a
        states:
          a:
            after: [{seconds: "{{ config.maxDurationSeconds }}", event: cap}, {seconds: 2, event: x}]
          completed: {final: true}
        transitions:
          - {on: call.ended, to: completed, when: "event.reason == 'busy'"}
          - {on: [timer.cap, timer.x], to: completed}
        """), "t.yaml")
    busy, plain = flow.transitions
    assert eval_when(busy, {"event": {"reason": "busy"}}) is True
    assert eval_when(busy, {"event": {"reason": "completed"}}) is False
    assert eval_when(plain, {}) is True
    with pytest.raises(RenderError, match="cannot evaluate when"):
        eval_when(busy, {"event": {}})
    cap, x = flow.states["a"].after
    assert timer_seconds(cap, {"config": CONFIG}) == 300.0
    assert timer_seconds(cap, {"config": {"maxDurationSeconds": 0}}) == 0.0
    assert timer_seconds(x, {}) == 2.0
    with pytest.raises(RenderError, match="timer 'cap'"):
        timer_seconds(cap, {"config": {"maxDurationSeconds": "never"}})


def test_validate_vars_and_defaults() -> None:
    flow = flow_with("- say: \"{{ vars.name }}\"",
                     "{type: object, required: [name], properties: {name: {type: string}, "
                     "n: {type: integer, default: 0}}}")
    assert validate_vars(flow, {"name": "Ada"}) == []
    assert validate_vars(flow, {"n": "x"}) == [
        "vars: 'name' is a required property", "vars.n: 'x' is not of type 'integer'"]
    assert vars_with_defaults(flow, {"name": "Ada"}) == {"n": 0, "name": "Ada"}
    assert validate_vars(flow_with("- say: hi"), {"anything": 1}) == []


@given(st.text())
def test_any_message_is_spoken_as_written(message: str) -> None:
    steps = render_actions(NOTIFY_SAY, {"call": {"message": message}})
    assert steps == ([Step("say", {"text": message})] if message.strip() else [])


NOTIFY_SAY = flow_with('- say: "{{ call.message }}"').states["a"].do


def test_every_schema_action_renders() -> None:
    from voicecall.engine.flows.schema import ACTIONS, flow_schema

    assert tuple(flow_schema()["$defs"]["action"]["properties"]) == ACTIONS
    schema = "{type: object, properties: {n: {}}}"
    steps = render("""\
        - say: a
        - play: https://example.com/a.wav
        - pause: 1
        - gather: {}
        - hangup: {reason: done}
        - reject: {}
        - dtmf: "1"
        - stream: {url: "wss://example.com/s"}
        - redirect: b
        - reply: {}
        - set: {n: 1}
        - end_call: {reason: completed}
        - goto: b
        """, {}, schema)
    assert tuple(s.kind for s in steps) == ACTIONS


def test_required_capabilities() -> None:
    flow = flow_with("""\
        - play: https://example.com/a.wav
        - stream: {url: "wss://example.com/s"}
        - reject: {}
        - gather: {input: both}
        """)
    assert flow.required_capabilities() == {"play", "stream", "reject", "say", "gather.speech",
                                            "gather.dtmf"}
