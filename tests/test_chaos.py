"""Carriers deliver callbacks twice and out of order: every scenario must end
in the same final state, with the same turns, as with in-order delivery."""

from __future__ import annotations

from pathlib import Path

import pytest

from voicecall.engine.testing import Harness, load_scenario
from voicecall.providers.mock import Chaos

SCENARIOS = ["notify_answered", "notify_busy", "conversation_two_turns", "reminder_cancel_after_invalid",
             "ivr_dtmf_sales", "conversation_hangup_mid_turn"]
HERE = Path(__file__).parent / "scenarios"


@pytest.mark.parametrize("name", SCENARIOS)
async def test_duplicate_and_reordered_callbacks_converge(name: str) -> None:
    scenario = load_scenario(HERE / f"{name}.yaml")
    flow = scenario.flow
    if flow.endswith(".yaml"):
        flow_path = (HERE / flow).resolve()
        config = {"flows": {"paths": [str(flow_path.parent)]}}
        flow = flow_path.stem
    else:
        config = {}

    async def final(chaos: Chaos | None) -> tuple[str, str, int, list[str]]:
        async with Harness(config={**config, **scenario.config}, scale=0.01, chaos=chaos) as harness:
            record = (await harness.run(scenario, flow)).record
        return record["state"], record["endReason"], record["turnCount"], [t["text"] for t in record["transcript"]]

    expected = await final(None)
    for seed in (1, 2, 3):
        assert await final(Chaos(seed=seed, duplicate=0.5, reorder=0.5)) == expected
