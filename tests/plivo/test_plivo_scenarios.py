"""Every example scenario ends the same way on Plivo as on the mock carrier,
with and without seeded chaos on the callbacks. ``PlivoHarness`` is the shared
Harness with the Plivo emulator in place of the carrier: exactly what the
harness needs to support ``provider="plivo"``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from plivo_support import AUTH_ID, TOKEN

from voicecall.engine.testing import Harness, Scenario, _resolve_flow, load_scenario, run_scenario
from voicecall.providers.mock.calls import Chaos as MockChaos

SCENARIOS = sorted((Path(__file__).parents[2] / "examples" / "flows" / "scenarios").glob("*.yaml"))


class PlivoHarness(Harness):
    def __init__(self, *, config: dict[str, Any], chaos: Any = None):
        super().__init__("mock", config=config, chaos=chaos)
        self.provider = "plivo"

    async def __aenter__(self) -> PlivoHarness:
        from voicecall.engine.runtime import VoiceCallRuntime
        from voicecall.providers.plivo import PlivoEmulator

        self.emulator = PlivoEmulator(AUTH_ID, TOKEN, clock=self.clock, chaos=self.chaos)
        base_url = await self.emulator.start()
        self.overrides.update(provider="plivo", fromNumber="+15550000000",
                              plivo={"authId": AUTH_ID, "authToken": TOKEN, "apiBaseUrl": base_url})
        self.runtime = VoiceCallRuntime(self.base.replace(**self.overrides), clock=self.clock)
        try:
            await self.runtime.start()
        except BaseException:
            await self._stop_emulator()
            raise
        return self


def on(sc: Scenario, provider: str) -> Scenario:
    return Scenario(sc.flow, provider, sc.call, sc.config, sc.callee, sc.rpc, sc.base)


async def run_plivo(sc: Scenario, chaos: Any = None) -> Any:
    flow_name, flow_dirs = _resolve_flow(sc)
    async with PlivoHarness(config={"flows": {"paths": flow_dirs}, **sc.config}, chaos=chaos) as harness:
        result = await harness.run(sc, flow_name)
        uuid = result.record["providerCallId"]
        requests = [e.detail for e in harness.emulator.log(uuid) if e.kind == "request"]
    return result, requests


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
async def test_example_scenarios_end_alike_on_plivo_and_mock(path: Path) -> None:
    sc = load_scenario(path)
    plivo, requests = await run_plivo(sc)
    mock = await run_scenario(on(sc, "mock"))
    facts = ("state", "endReason", "turnCount")
    assert {k: plivo.record[k] for k in facts} == {k: mock.record[k] for k in facts}
    assert plivo.record["provider"] == "plivo"
    assert [t["text"] for t in plivo.record["transcript"]] == [t["text"] for t in mock.record["transcript"]]
    assert all(d["commands"].startswith('<?xml version="1.0" encoding="UTF-8"?><Response>') for d in plivo.documents)
    assert all(r.get("status") == 200 for r in requests)          # every webhook verified and answered


async def test_chaos_on_callbacks_changes_nothing() -> None:
    sc = load_scenario(SCENARIOS[0])
    plivo, requests = await run_plivo(sc, chaos=MockChaos(seed=3, duplicate=0.7, reorder=0.5))
    sent = [(r["type"], r["event"]) for r in requests if r["type"] in ("status", "hangup")]
    assert len(sent) > len(set(sent))            # some callbacks really came twice
    mock = await run_scenario(on(sc, "mock"))
    assert (plivo.record["state"], plivo.record["endReason"]) == (mock.record["state"], mock.record["endReason"])
