"""The real runtime against the emulator: every example scenario ends the same
way on Twilio as on the mock carrier, and chaos does not change the outcome."""

from __future__ import annotations

from pathlib import Path

import pytest

from voicecall.engine.testing import Scenario, load_scenario, run_scenario
from voicecall.providers.mock.calls import Chaos as MockChaos

SCENARIOS = sorted((Path(__file__).parents[2] / "examples" / "flows" / "scenarios").glob("*.yaml"))


def on(sc: Scenario, provider: str) -> Scenario:
    return Scenario(sc.flow, provider, sc.call, sc.config, sc.callee, sc.rpc, sc.base)


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
async def test_example_scenarios_end_alike_on_twilio_and_mock(path: Path) -> None:
    sc = load_scenario(path)
    twilio = await run_scenario(on(sc, "twilio"))
    mock = await run_scenario(on(sc, "mock"))
    facts = ("state", "endReason", "turnCount")
    assert {k: twilio.record[k] for k in facts} == {k: mock.record[k] for k in facts}
    assert twilio.record["provider"] == "twilio" and twilio.record["providerCallId"].startswith("CA")
    said = [t["text"] for t in twilio.record["transcript"]]
    assert said == [t["text"] for t in mock.record["transcript"]]
    assert all(d["twiml"].startswith('<?xml version="1.0" encoding="UTF-8"?><Response>')
               for d in twilio.documents)


async def test_chaos_on_status_callbacks_changes_nothing() -> None:
    from voicecall.engine.testing import Harness

    sc = load_scenario(SCENARIOS[0])
    async with Harness("twilio", chaos=MockChaos(seed=3, duplicate=0.5, reorder=0.5),
                       config={"flows": {"paths": [str(SCENARIOS[0].parent.parent)]}}) as harness:
        result = await harness.run(on(sc, "twilio"), Path(sc.flow).stem)
        sent = [(e.detail["event"], e.detail["seq"]) for e in harness.emulator.log(result.record["providerCallId"])
                if e.kind == "request" and e.detail["type"] == "status"]
    assert len(sent) > len(set(sent))            # some callbacks really came twice
    mock = await run_scenario(on(sc, "mock"))
    assert (result.record["state"], result.record["endReason"]) == (mock.record["state"], mock.record["endReason"])
