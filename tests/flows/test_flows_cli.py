"""``voicecall flows ...``: the exact text a user sees."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from voicecall.engine.cli import cli
from voicecall.engine.flows.library import builtin_dir

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "flows"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No ./voicecall.yaml or $VOICECALL_CONFIG may leak into the library.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VOICECALL_CONFIG", raising=False)
    monkeypatch.setenv("VOICECALL_STATE_DIR", str(tmp_path / "state"))


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["flows", *args])
    return result.exit_code, result.stdout, result.stderr


def user_config(tmp_path: Path, *flows: Path) -> Path:
    directory = tmp_path / "myflows"
    directory.mkdir(exist_ok=True)
    for flow in flows:
        shutil.copy(flow, directory / flow.name)
    config = tmp_path / "voicecall-test.yaml"
    config.write_text("provider: mock\nflows:\n  paths: [myflows]\n")
    return config


def test_list() -> None:
    b = builtin_dir()
    code, out, err = run("list")
    assert (code, err) == (0, "")
    assert out == (
        "NAME              MODE          KIND        DESCRIPTION                               PATH\n"
        f"conversation      conversation  call        Speak the opening message, then talk tu…  {b}/conversation.yaml\n"
        f"inbound_greeting  conversation  call        Answer an inbound call with the greetin…  {b}/inbound_greeting.yaml\n"  # noqa: E501
        f"notify            notify        call        Speak one message, then hang up           {b}/notify.yaml\n"
        f"reaper            supervisor    supervisor  Runs beside every call                    {b}/reaper.yaml\n"
    )


def test_list_json_with_config(tmp_path: Path) -> None:
    config = user_config(tmp_path, EXAMPLES / "ivr_menu.yaml")
    code, out, _ = run("list", "--json", "--config", str(config))
    assert code == 0
    rows = json.loads(out)["flows"]
    assert [r["name"] for r in rows] == ["conversation", "inbound_greeting", "ivr_menu", "notify",
                                         "reaper"]
    assert rows[2] == {"name": "ivr_menu", "mode": "ivr", "kind": "call",
                       "path": str(tmp_path / "myflows" / "ivr_menu.yaml"),
                       "description": 'A small IVR menu: say "sales" or press 1, say "support" '
                                      'or press 2, say "repeat" or press 9 to hear the menu '
                                      'again.'}


def test_show_prints_the_source() -> None:
    code, out, _ = run("show", "notify")
    assert code == 0
    assert out == (builtin_dir() / "notify.yaml").read_text()


def test_show_a_path() -> None:
    path = EXAMPLES / "ivr_menu.yaml"
    assert run("show", str(path)) == (0, path.read_text(), "")


def test_show_unknown() -> None:
    code, out, err = run("show", "notfy")
    assert (code, out) == (1, "")
    assert err == "Error: unknown flow 'notfy' (did you mean 'notify'?)\n"


def test_validate_library() -> None:
    assert run("validate") == (0, "OK: 4 flows\n", "")


def test_validate_files() -> None:
    code, out, _ = run("validate", str(EXAMPLES / "ivr_menu.yaml"),
                       str(EXAMPLES / "appointment_reminder.yaml"))
    assert (code, out) == (0, "OK: 2 flows\n")


def test_validate_reports_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("flow: bad\ninitial: a\nstates:\n  a:\n    do:\n      - say: hi\n"
                   "  completed: {final: true}\ntransitions:\n"
                   "  - {on: call.endd, to: completed}\n  - {on: dtmf, from: a, to: b}\n")
    code, out, _ = run("validate", str(bad), str(EXAMPLES / "ivr_menu.yaml"))
    assert code == 1
    assert out == (
        f"{bad}:9: $.transitions[0].on: unknown event 'call.endd' (did you mean 'call.ended'?)\n"
        f"{bad}:10: $.transitions[1].to: unknown state 'b'\n")


def test_validate_json(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("flow: bad\ninitial: a\nstates: {a: {do: [sya: x]}}\n")
    code, out, _ = run("validate", "--json", str(bad))
    assert code == 1
    assert json.loads(out) == {"ok": False, "flows": 0, "warnings": [], "errors": [
        {"file": str(bad), "line": 3, "path": "$.states.a.do[0]",
         "message": "unknown action 'sya' (did you mean 'say'?)"}]}
    code, out, _ = run("validate", "--json")
    assert (code, json.loads(out)) == (0, {"ok": True, "flows": 4, "errors": [], "warnings": []})


def test_validate_missing_file(tmp_path: Path) -> None:
    code, out, _ = run("validate", str(tmp_path / "nope.yaml"))
    assert (code, out) == (1, f"{tmp_path / 'nope.yaml'}: $: cannot read flow file: "
                              "No such file or directory\n")


def test_validate_config_with_duplicate_name(tmp_path: Path) -> None:
    config = user_config(tmp_path, builtin_dir() / "notify.yaml")
    code, out, _ = run("validate", "--config", str(config))
    assert code == 1
    assert out == (f"{tmp_path / 'myflows' / 'notify.yaml'}:1: $.flow: flow name 'notify' "
                   f"already defined in {builtin_dir() / 'notify.yaml'}\n")


def test_validate_config_with_user_flows(tmp_path: Path) -> None:
    config = user_config(tmp_path, EXAMPLES / "ivr_menu.yaml",
                         EXAMPLES / "appointment_reminder.yaml")
    assert run("validate", "--config", str(config)) == (0, "OK: 6 flows\n", "")


def test_graph_mermaid_and_dot() -> None:
    from voicecall.engine.flows import FlowLibrary, to_dot, to_mermaid

    notify = FlowLibrary().get("notify")
    assert run("graph", "notify") == (0, to_mermaid(notify), "")
    assert run("graph", "notify", "--format", "dot") == (0, to_dot(notify), "")
    code, out, _ = run("graph", str(EXAMPLES / "ivr_menu.yaml"))
    assert code == 0 and out.startswith("stateDiagram-v2\n    state \"not-understood\"")


def test_graph_errors() -> None:
    assert run("graph", "nope") == (
        1, "", "Error: unknown flow 'nope' (known: conversation, inbound_greeting, notify, "
               "reaper)\n")
    code, _, err = run("graph", "notify", "--format", "png")
    assert code == 2
    assert "'png' is not one of 'mermaid', 'dot'" in err


def test_missing_config_is_an_error(tmp_path: Path) -> None:
    code, _, err = run("list", "--config", str(tmp_path / "missing.yaml"))
    assert code == 1
    assert err.startswith("Error: ") and err.count("\n") == 1 and "missing.yaml" in err


def test_simulate_needs_a_scenario() -> None:
    code, _, err = run("simulate", "notify")
    assert code == 2
    assert "Missing option '--scenario'" in err


def test_simulate_unavailable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "voicecall.engine.testing", None)  # import fails
    scenario = tmp_path / "s.yaml"
    scenario.write_text("flow: notify\n")
    code, out, err = run("simulate", "notify", "--scenario", str(scenario))
    assert (code, out) == (1, "")
    assert err.startswith("Error: simulation is not available: ")
    assert err.count("\n") == 1


def test_simulate_calls_the_runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sys
    import types

    calls: list[tuple[object, ...]] = []

    class Result:
        def timeline_text(self) -> str:
            return "0.0s call.initiated initiated"

        def as_json(self) -> dict[str, object]:
            return {"timeline": []}

    def simulate(flow: str, scenario: str, *, provider: str | None, settings: object) -> Result:
        calls.append((flow, scenario, provider, settings is not None))
        return Result()

    module = types.ModuleType("voicecall.engine.testing")
    module.simulate = simulate  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "voicecall.engine.testing", module)
    scenario = str(tmp_path / "s.yaml")
    assert run("simulate", "notify", "--scenario", scenario, "--provider", "twilio") == (
        0, "0.0s call.initiated initiated\n", "")
    assert run("simulate", "notify", "--scenario", scenario, "--json") == (
        0, '{\n  "timeline": []\n}\n', "")
    assert calls == [("notify", scenario, "twilio", True), ("notify", scenario, None, True)]
