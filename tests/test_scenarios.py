"""Every built-in and example flow, run for each scenario in tests/scenarios/
on every carrier we can simulate: the runtime, webhook server, carrier (or
its emulator), signatures and store are all real. Final states, timelines
and every rendered document (TwiML for Twilio) are snapshots."""

from __future__ import annotations

from pathlib import Path

import pytest

from voicecall.engine.testing import load_scenario, run_scenario

SCENARIOS = sorted(Path(__file__).parent.joinpath("scenarios").glob("*.yaml"))
PROVIDERS = ["mock", "twilio", "plivo", "telnyx"]
_RESULTS: dict[tuple[str, str], object] = {}


async def _run(path: Path, provider: str):
    key = (path.stem, provider)
    if key not in _RESULTS:
        scenario = load_scenario(path)
        _RESULTS[key] = await run_scenario(scenario.__class__(**{**scenario.__dict__, "provider": provider}),
                                           scale=0.01)
    return _RESULTS[key]


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
async def test_scenario(path: Path, provider: str, snapshot) -> None:
    assert (await _run(path, provider)).snapshot() == snapshot


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
async def test_every_carrier_ends_the_same_way(path: Path) -> None:
    outcomes = set()
    for provider in PROVIDERS:
        record = (await _run(path, provider)).record
        outcomes.add((record["state"], record["endReason"], record["turnCount"],
                      tuple(t["text"] for t in record["transcript"])))
    assert len(outcomes) == 1, outcomes
