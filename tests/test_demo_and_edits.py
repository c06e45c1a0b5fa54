"""`voicecall demo` end to end, and proof that the engine interprets the YAML:
edited copies of a built-in flow change what the carrier is told."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from voicecall.engine.cli import cli
from voicecall.engine.testing import Scenario, run_scenario

FLOWS = Path(__file__).parent.parent / "flows"


def test_demo_runs_three_calls_and_prints_their_records() -> None:
    result = CliRunner().invoke(cli, ["demo", "--json", "--speed", "200"])
    assert result.exit_code == 0, result.output
    calls = json.loads(result.output)["calls"]
    assert [(c["flow"], c["direction"], c["state"], c["turnCount"]) for c in calls] == [
        ("notify", "outbound", "hangup-bot", 0),
        ("conversation", "outbound", "hangup-user", 2),
        ("inbound_greeting", "inbound", "hangup-user", 1),
    ]
    assert calls[0]["transcript"][0]["text"] == "Hello! Your table for two is ready."


def test_demo_timeline_is_readable() -> None:
    result = CliRunner().invoke(cli, ["demo", "--speed", "200"])
    assert result.exit_code == 0, result.output
    assert "== 1. Notify call: one message, then hang up" in result.output
    assert "document (inline): say 'Hello! Your table for two is ready.' | pause 3s | hangup" in result.output
    assert "Final call records" in result.output


async def _heard(flow_dir: Path, name: str) -> tuple[list[str], list[object]]:
    scenario = Scenario(flow=name, call={"to": "+15550001111", "message": "Original message."},
                        callee=({"answer": {"after": 1}},), config={"flows": {"paths": [str(flow_dir)]}})
    result = await run_scenario(scenario, scale=0.01)
    return [t["text"] for t in result.record["transcript"]], result.documents


async def test_edited_copies_of_the_notify_flow_change_the_rendered_output(tmp_path: Path) -> None:
    source = (FLOWS / "notify.yaml").read_text()
    say = '      - say: "{{ call.message }}"'
    assert "flow: notify\n" in source and say in source

    def variant(name: str, text: str) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        (folder / f"{name}.yaml").write_text(text.replace("flow: notify\n", f"flow: {name}\n"))
        return folder

    # 1. A line of text.
    texted = variant("notify_text", source.replace(say, '      - say: "Note: {{ call.message }}"'))
    heard, _ = await _heard(texted, "notify_text")
    assert heard == ["Note: Original message."]

    # 2. The order of actions: say a goodbye before the message.
    reordered = variant("notify_order", source.replace(say, '      - say: "Goodbye first."\n' + say))
    heard, documents = await _heard(reordered, "notify_order")
    assert heard == ["Goodbye first.", "Original message."]
    assert [next(iter(c)) for c in documents[0]["commands"]] == ["say", "say", "pause", "hangup"]

    # 3. A new state: answered now goes to an extra state that says something else.
    extra = source.replace("      - hangup: {}\n", "      - goto: extra\n", 1).replace(
        "  completed: {final: true}\n",
        '  extra:\n    do:\n      - say: "An extra state."\n      - hangup: {}\n  completed: {final: true}\n')
    extra = extra.replace("    opening: true\n", "")
    first_end = '  - {on: call.ended, from: "*", to: busy,'
    extra = extra.replace(first_end, "  - {on: call.ended, from: extra, to: hangup-bot}\n" + first_end)
    added = variant("notify_extra", extra)
    heard, _ = await _heard(added, "notify_extra")
    assert heard == ["Original message.", "An extra state."]
