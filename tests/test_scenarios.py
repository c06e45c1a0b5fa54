"""Every built-in and example flow, run on the mock carrier for each scenario
in tests/scenarios/: the runtime, webhook server, carrier, signatures and
store are all real; the rendered documents and the timelines are snapshots."""

from __future__ import annotations

from pathlib import Path

import pytest

from voicecall.engine.testing import load_scenario, run_scenario

SCENARIOS = sorted(Path(__file__).parent.joinpath("scenarios").glob("*.yaml"))


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
async def test_scenario(path: Path, snapshot) -> None:
    result = await run_scenario(load_scenario(path), scale=0.01)
    assert result.snapshot() == snapshot
