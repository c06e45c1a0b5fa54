"""The example flows run end to end on the simulator (mock carrier, loopback)."""

from __future__ import annotations

from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "flows"
MENU = ("bot: For sales, say sales or press 1. For support, say support or press 2. "
        "To hear this again, say repeat or press 9.")
ASK = "bot: Press 1 to confirm, or 2 to cancel."

CASES = {
    "reminder_confirm": ("appointment_reminder", 1, [
        "bot: Hello Ada. This is a reminder of your appointment tomorrow at 10 am.", ASK,
        "caller: 1", "bot: Thank you, your appointment is confirmed. See you then. Goodbye."]),
    "reminder_no_input": ("appointment_reminder", 0, [
        "bot: Hello Ada. This is a reminder of your appointment on Monday.", ASK, ASK, ASK,
        "bot: We did not get an answer. We will try again later. Goodbye."]),
    "ivr_support_by_speech": ("ivr_menu", 1, [
        "bot: Thanks for calling Example Company.", MENU, "caller: I need support please",
        "bot: Thank you. A support engineer will call you back shortly. Goodbye."]),
    "ivr_invalid_then_sales": ("ivr_menu", 2, [
        "bot: Thanks for calling Example Company.", MENU, "caller: 5",
        "bot: Sorry, I didn't get that.", MENU, "caller: 1",
        "bot: Thank you. Someone from our sales team will call you back today. Goodbye."]),
}


@pytest.mark.parametrize("scenario", sorted(CASES))
def test_example_scenario(scenario: str) -> None:
    from voicecall.engine import testing
    flow, turns, transcript = CASES[scenario]
    result = testing.simulate(str(EXAMPLES / f"{flow}.yaml"),
                              EXAMPLES / "scenarios" / f"{scenario}.yaml")
    snap = result.snapshot()
    assert (snap["state"], snap["endReason"], snap["turnCount"]) == ("hangup-bot", "hangup-bot",
                                                                      turns)
    assert snap["transcript"] == transcript


def test_every_scenario_is_tested() -> None:
    assert sorted(p.stem for p in (EXAMPLES / "scenarios").glob("*.yaml")) == sorted(CASES)
