"""Drawing flows, and the rule that engine code never names a flow's states."""

from __future__ import annotations

import re
from pathlib import Path

from voicecall.engine.flows import FlowLibrary, to_dot, to_mermaid

ENGINE = Path(__file__).resolve().parents[2] / "engine"

NOTIFY_MERMAID = """\
stateDiagram-v2
    state "no-answer" as no_answer
    state "hangup-user" as hangup_user
    state "hangup-bot" as hangup_bot
    state "*" as any_state
    [*] --> initiated
    initiated --> ringing: call.ringing
    initiated --> answered: call.answered
    ringing --> answered: call.answered
    any_state --> busy: call.ended [event.reason == 'busy']
    any_state --> no_answer: call.ended [event.reason == 'no-answer']
    any_state --> failed: call.ended [event.reason == 'failed']
    any_state --> hangup_user: call.ended [event.reason == 'hangup-user']
    any_state --> hangup_bot: call.ended [event.reason == 'hangup-bot']
    any_state --> timeout: call.ended [event.reason == 'timeout']
    any_state --> error: call.ended [event.reason == 'error']
    any_state --> voicemail: call.ended [event.reason == 'voicemail']
    any_state --> completed: call.ended
    completed --> [*]
    busy --> [*]
    no_answer --> [*]
    failed --> [*]
    hangup_user --> [*]
    hangup_bot --> [*]
    timeout --> [*]
    error --> [*]
    voicemail --> [*]
"""

REAPER_DOT = """\
digraph "reaper" {
    rankdir=LR;
    node [shape=box, style=rounded];
    "__start__" [shape=point, label=""];
    "watching";
    "live";
    "reaping";
    "capping";
    "done" [shape=doublecircle];
    "*" [shape=plaintext, label="* (any live state)"];
    "__start__" -> "watching";
    "watching" -> "watching" [label="call.initiated, call.ringing"];
    "watching" -> "live" [label="call.answered"];
    "watching" -> "reaping" [label="timer.stale"];
    "live" -> "capping" [label="timer.max_duration"];
    "*" -> "done" [label="call.ended"];
}
"""


def test_notify_mermaid() -> None:
    assert to_mermaid(FlowLibrary().get("notify")) == NOTIFY_MERMAID


def test_reaper_dot() -> None:
    assert to_dot(FlowLibrary().get("reaper")) == REAPER_DOT


def test_goto_edges_are_drawn() -> None:
    flow = FlowLibrary().get("conversation")
    mermaid = to_mermaid(flow)
    assert "    speaking --> listening: goto\n" in mermaid
    assert "    listening --> thinking: speech.final\n" in mermaid
    assert "    listening --> listening: speech.final [turn.awaited]\n" in mermaid
    assert '"speaking" -> "listening" [label="goto", style=dashed];' in to_dot(flow)


def test_engine_code_never_names_builtin_only_states() -> None:
    """STYLE 10: the engine branches on tags and ``final``, never on a state name,
    so a user's flow is treated exactly like a built-in one."""
    builtin_only = ("listening", "thinking", "speaking", "apologizing", "goodbye", "ending",
                    "watching", "reaping", "capping")
    pattern = re.compile("|".join(rf"""['"]{name}['"]""" for name in builtin_only))
    # Lines that hold one of these words without branching on a state.
    allowed = {
        "events.py": "LIVE_STATES:",          # the anchor's status vocabulary (DESIGN §3)
        "responder.py": "_REASONING_KEYS =",  # keys in a model's JSON output
    }
    offenders = [f"{path.relative_to(ENGINE)}:{n}: {line.strip()}"
                 for path in sorted(ENGINE.rglob("*.py"))
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if pattern.search(line)
                 and not line.lstrip().startswith(allowed.get(path.name, "\0"))]
    assert offenders == []
