"""Built-in and example flows, the library, and editing a flow on disk."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from voicecall.engine.errors import FlowError
from voicecall.engine.events import TERMINAL_STATES
from voicecall.engine.flows import (
    FlowLibrary,
    UnknownFlow,
    eval_when,
    load_flow_file,
    render_actions,
)
from voicecall.engine.flows.library import builtin_dir
from voicecall.engine.program import Step

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "flows"
CONFIG = {"outbound": {"notifyHangupDelaySec": 3}, "silenceTimeoutMs": 800,
          "maxDurationSeconds": 300, "staleCallReaperSeconds": 120}


@pytest.mark.parametrize("path", sorted(builtin_dir().glob("*.yaml")) + sorted(EXAMPLES.glob("*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_flows_load_clean(path: Path) -> None:
    flow = load_flow_file(path)
    assert flow.warnings == ()
    assert flow.name == path.stem


def test_library_names_and_paths() -> None:
    library = FlowLibrary()
    assert library.names() == ["conversation", "inbound_greeting", "notify", "reaper"]
    assert library.problems() == []
    assert library.path_of("notify") == str(builtin_dir() / "notify.yaml")
    with_examples = FlowLibrary([EXAMPLES])
    assert with_examples.names() == ["appointment_reminder", "conversation", "inbound_greeting",
                                     "ivr_menu", "notify", "reaper"]


def test_unknown_flow_suggests() -> None:
    with pytest.raises(UnknownFlow) as info:
        FlowLibrary().get("notfy")
    assert str(info.value) == ("unknown flow 'notfy' (did you mean 'notify'?) "
                               "(known: conversation, inbound_greeting, notify, reaper)")
    assert isinstance(info.value, KeyError)


def test_user_flow_cannot_reuse_a_builtin_name(tmp_path: Path) -> None:
    shutil.copy(builtin_dir() / "notify.yaml", tmp_path / "mine.yaml")
    library = FlowLibrary([tmp_path])
    assert [p.format() for p in library.problems()] == [
        f"{tmp_path / 'mine.yaml'}:1: $.flow: flow name 'notify' already defined in "
        f"{builtin_dir() / 'notify.yaml'}"]
    assert library.path_of("notify") == str(builtin_dir() / "notify.yaml")


def test_broken_user_flow_is_reported_and_get_raises(tmp_path: Path) -> None:
    (tmp_path / "bad.yml").write_text("flow: bad\ninitial: a\nstates: {a: {do: [sya: x]}}\n")
    (tmp_path / "notes.txt").write_text("not a flow")
    library = FlowLibrary([tmp_path, tmp_path / "missing"])
    assert [p.format() for p in library.problems()] == [
        f"{tmp_path / 'bad.yml'}:3: $.states.a.do[0]: unknown action 'sya' (did you mean 'say'?)",
        f"{tmp_path / 'missing'}: $: flows path is not a directory",
    ]
    with pytest.raises(FlowError, match="unknown action 'sya'"):
        library.get("bad")
    assert "bad" not in library.names()


def test_notify_renders_message_delay_hangup() -> None:
    flow = FlowLibrary().get("notify")
    opening = [s for s in flow.states.values() if s.opening]
    assert [s.name for s in opening] == ["answered"]
    ctx = {"call": {"message": "Your table is ready"}, "config": CONFIG}
    assert render_actions(opening[0].do, ctx) == [
        Step("say", {"text": "Your table is ready"}), Step("pause", {"seconds": 3}),
        Step("hangup", {})]
    ended = flow.transitions_for("answered", "call.ended")
    chosen = [t.dest for t in ended if eval_when(t, {"event": {"reason": "busy"}})]
    assert chosen[0] == "busy"
    assert [t.dest for t in ended if eval_when(t, {"event": {"reason": "completed"}})] == [
        "completed"]
    assert {s.name for s in flow.states.values() if s.final} == set(TERMINAL_STATES)
    assert flow.required_capabilities() == {"say"}


def test_conversation_awaited_turn_comes_first() -> None:
    flow = FlowLibrary().get("conversation")
    final = flow.transitions_for("listening", "speech.final")
    assert [t.dest for t in final] == ["listening", "thinking"]
    assert eval_when(final[0], {"turn": {"awaited": True, "token": "t"}}) is True
    assert eval_when(final[0], {"turn": {"awaited": False, "token": "t"}}) is False
    answered = flow.states["answered"]
    assert answered.opening and answered.goto == "listening"
    # An empty opening message must not become an empty <Say>.
    assert render_actions(answered.do, {"call": {"message": ""}}) == [
        Step("goto", {"state": "listening"})]
    assert flow.required_capabilities() == {"say", "gather.speech", "dtmf"}
    assert flow.transitions_for("completed", "call.ended") == ()


def test_conversation_silence_counter() -> None:
    flow = FlowLibrary().get("conversation")
    timeouts = flow.transitions_for("listening", "gather.timeout")
    ctx = {"vars": {"silences": 1}}
    first = next(t for t in timeouts if eval_when(t, ctx))
    assert first.dest == "listening"
    assert render_actions(first.do, ctx) == [Step("set", {"silences": 2})]
    assert next(t for t in timeouts if eval_when(t, {"vars": {"silences": 2}})).dest == "goodbye"


def test_reaper_rearms_on_activity_only_before_answer() -> None:
    flow = FlowLibrary().get("reaper")
    assert flow.kind == "supervisor"
    assert [t.dest for t in flow.transitions_for("watching", "call.ringing")] == ["watching"]
    assert [t.dest for t in flow.transitions_for("watching", "call.answered")] == ["live"]
    assert flow.transitions_for("live", "call.ringing") == ()
    assert flow.transitions_for("live", "timer.stale") == ()
    assert render_actions(flow.states["capping"].do, {}) == [Step("end_call", {"reason": "timeout"})]


def test_appointment_reminder_branches() -> None:
    flow = load_flow_file(EXAMPLES / "appointment_reminder.yaml")
    dtmf = flow.transitions_for("asking", "dtmf")
    pick = lambda d: next(t.dest for t in dtmf if eval_when(t, {"event": {"digits": d}}))  # noqa: E731
    assert (pick("1"), pick("2"), pick("7")) == ("confirmed", "cancelled", "invalid")
    steps = render_actions(flow.states["answered"].do,
                           {"vars": {"name": "Ada", "when": "tomorrow at 10"}})
    assert steps[0] == Step("say", {"text": "Hello Ada. This is a reminder of your appointment "
                                            "tomorrow at 10."})
    assert flow.required_capabilities() == {"say", "gather.dtmf"}


def test_ivr_menu_accepts_speech_or_digits() -> None:
    flow = load_flow_file(EXAMPLES / "ivr_menu.yaml")
    speech = flow.transitions_for("menu", "speech.final")
    pick = lambda text: next(t.dest for t in speech  # noqa: E731
                             if eval_when(t, {"event": {"text": text}}))
    assert pick("Support please") == "support"
    assert pick("uh, SALES") == "sales"
    assert pick("repeat that") == "menu"
    assert pick("banana") == "not-understood"
    assert flow.required_capabilities() == {"say", "gather.speech", "gather.dtmf"}


def test_editing_a_flow_changes_what_it_renders(tmp_path: Path) -> None:
    """Flows are data: editing the YAML changes behaviour, no code involved."""
    path = tmp_path / "notify_copy.yaml"
    source = (builtin_dir() / "notify.yaml").read_text()
    path.write_text(source.replace("flow: notify", "flow: notify_copy"))
    ctx = {"call": {"message": "Hi"}, "config": CONFIG}

    before = FlowLibrary([tmp_path]).get("notify_copy")
    assert [s.kind for s in render_actions(before.states["answered"].do, ctx)] == [
        "say", "pause", "hangup"]

    # 1. change the text of a line
    edited = path.read_text().replace('say: "{{ call.message }}"',
                                      'say: "Message for you: {{ call.message }}"')
    # 2. change the order of actions (pause before the message)
    edited = edited.replace(
        '      - say: "Message for you: {{ call.message }}"   # the message is data: inserted, '
        'never evaluated\n      - pause: "{{ config.outbound.notifyHangupDelaySec }}"\n',
        '      - pause: "{{ config.outbound.notifyHangupDelaySec }}"\n'
        '      - say: "Message for you: {{ call.message }}"\n')
    # 3. add a state: answered now goes to a goodbye state
    edited = edited.replace("      - hangup: {}\n", "      - goto: goodbye\n  goodbye:\n"
                            "    do:\n      - say: Goodbye\n      - hangup: {}\n")
    path.write_text(edited)

    after = FlowLibrary([tmp_path]).get("notify_copy")
    assert after.hash != before.hash
    assert render_actions(after.states["answered"].do, ctx) == [
        Step("pause", {"seconds": 3}), Step("say", {"text": "Message for you: Hi"}),
        Step("goto", {"state": "goodbye"})]
    assert after.states["answered"].goto == "goodbye"
    assert render_actions(after.states["goodbye"].do, ctx) == [
        Step("say", {"text": "Goodbye"}), Step("hangup", {})]


def test_resolve_takes_a_name_or_a_path(tmp_path: Path) -> None:
    library = FlowLibrary()
    assert library.resolve("notify").name == "notify"
    assert library.resolve(str(EXAMPLES / "ivr_menu.yaml")).name == "ivr_menu"
    with pytest.raises(FlowError, match="cannot read flow file"):
        library.resolve(str(tmp_path / "missing.yaml"))


def test_flow_model_is_frozen_and_hashable() -> None:
    flow = FlowLibrary().get("conversation")
    with pytest.raises(AttributeError):
        flow.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        flow.states["x"] = flow.states["listening"]  # type: ignore[index]
    with pytest.raises(TypeError):
        flow.states["answered"].do[0].args["text"] = "x"  # type: ignore[index]
    assert len({flow, flow}) == 1 and len(set(flow.transitions)) == len(flow.transitions)
