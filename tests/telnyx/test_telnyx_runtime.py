"""The real runtime on Telnyx: the emulator behind our provider, driven by the
engine's command path. Every example scenario ends as it does on the mock
carrier, chaos changes nothing, inbound calls are answered (the reference
plugin never answered them) or rejected without a greeting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from telnyx_support import API_KEY, CONNECTION_ID

from voicecall.engine.runtime import VoiceCallRuntime
from voicecall.engine.testing import Harness, Scenario, load_scenario, run_scenario
from voicecall.providers.callee import Callee
from voicecall.providers.telnyx.emulator import Chaos, TelnyxEmulator

SCENARIOS = sorted((Path(__file__).parents[2] / "examples" / "flows" / "scenarios").glob("*.yaml"))
FROM = "+15550001000"


class TelnyxHarness(Harness):
    """engine.testing.Harness with the Telnyx emulator as the carrier (what the shared
    suite's ``provider="telnyx"`` needs: see the emulator's docstring)."""

    def __init__(self, **kwargs: Any):
        super().__init__("mock", **kwargs)
        self.provider = "telnyx"

    async def __aenter__(self) -> TelnyxHarness:
        self.emulator = TelnyxEmulator(API_KEY, clock=self.clock, chaos=self.chaos)
        base_url = await self.emulator.start()
        assert base_url == self.emulator.settings()["apiBaseUrl"]
        self.overrides.update(provider="telnyx", fromNumber=FROM, telnyx=self.emulator.settings(CONNECTION_ID))
        self.runtime = VoiceCallRuntime(self.base.replace(**self.overrides), clock=self.clock)
        try:
            await self.runtime.start()
        except BaseException:
            await self.emulator.stop()
            raise
        return self


def on(sc: Scenario, provider: str) -> Scenario:
    return Scenario(sc.flow, provider, sc.call, sc.config, sc.callee, sc.rpc, sc.base)


async def run_on_telnyx(sc: Scenario, chaos: Chaos | None = None) -> tuple[Any, TelnyxEmulator]:
    flow_dir = str((sc.base / sc.flow).parent.resolve())
    async with TelnyxHarness(config={"flows": {"paths": [flow_dir]}, **sc.config}, chaos=chaos) as harness:
        result = await harness.run(on(sc, "telnyx"), Path(sc.flow).stem)
        return result, harness.emulator


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
async def test_example_scenarios_end_alike_on_telnyx_and_mock(path: Path) -> None:
    sc = load_scenario(path)
    telnyx, emulator = await run_on_telnyx(sc)
    mock = await run_scenario(on(sc, "mock"))
    facts = ("state", "endReason", "turnCount")
    assert {k: telnyx.record[k] for k in facts} == {k: mock.record[k] for k in facts}
    assert telnyx.record["provider"] == "telnyx" and telnyx.record["providerCallId"].startswith("v3:")
    assert [t["text"] for t in telnyx.record["transcript"]] == [t["text"] for t in mock.record["transcript"]]
    call = emulator.calls[telnyx.record["providerCallId"]]
    assert not [e for e in call.log if e.kind == "error"]


async def test_chaos_on_events_changes_nothing() -> None:
    sc = load_scenario(SCENARIOS[0])
    telnyx, emulator = await run_on_telnyx(sc, Chaos(seed=3, duplicate=0.5, reorder=0.3))
    sent = [e.detail["event"] for e in emulator.calls[telnyx.record["providerCallId"]].log if e.kind == "request"]
    assert len(sent) > len(set(sent))
    mock = await run_scenario(on(sc, "mock"))
    assert (telnyx.record["state"], telnyx.record["endReason"]) == (mock.record["state"], mock.record["endReason"])


async def _inbound(policy: str, script: list[Any]) -> tuple[Any, Any]:
    async with TelnyxHarness(config={"inboundPolicy": policy}) as harness:
        runtime, emulator = harness.runtime, harness.emulator
        ccid = await emulator.dial_in("+15550003000", FROM, runtime.public_url, Callee.from_script(script))
        call = await emulator.wait_ended(ccid, timeout=30)
        record = await runtime.store.find_provider_call("telnyx", ccid)
        if record is not None:
            record = await runtime.wait_ended(record.call_id, timeout=30)
        return call, record


async def test_an_inbound_call_is_answered_and_converses() -> None:
    call, record = await _inbound("open", [{"say": "hello there"}, {"hangup": {}}])
    names = [e.detail["name"] for e in call.log if e.kind == "command"]
    assert names[0] == "answer" and "transcription_start" in names
    public = record.to_public()
    assert public["direction"] == "inbound" and public["answeredAt"]
    assert "hello there" in [t["text"] for t in public["transcript"]]


async def test_a_refused_inbound_call_is_rejected_without_a_greeting() -> None:
    call, record = await _inbound("disabled", [{"say": "hello?"}])
    assert record is None
    assert call.hangup_cause == "call_rejected" and call.heard == []
    assert [e.detail["name"] for e in call.log if e.kind == "command"] == ["reject"]
