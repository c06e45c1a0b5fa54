"""Each benchmark runs for a few iterations and yields table rows.

No timing is asserted (timings belong to ``make bench``): only that every
benchmark still drives the real code paths end to end and reports numbers.
"""

from __future__ import annotations

import math

import pytest

from bench.common import Row, percentile, table


def _check(rows: list[Row], bench: str, cases: list[str]) -> None:
    assert [r.bench for r in rows] == [bench] * len(rows)
    names = [r.case for r in rows]
    for case in cases:
        assert any(case in name for name in names), (case, names)
    for row in rows:
        assert math.isfinite(row.median) and row.median > 0, row
    text = table(rows)
    assert all(row.case in text for row in rows)


def test_percentile_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile([3.0], 99) == 3.0
    assert math.isnan(percentile([], 50))


def test_webhooks_quick() -> None:
    from bench import webhooks

    rows = webhooks.run(quick=True)
    _check(rows, "1 webhooks", ["baseline status", "voicecall status", "voicecall gather", "replayed"])
    ours = {r.case: r for r in rows}
    # Every request was answered 200 by the real server (signatures, tokens valid).
    assert all("non-200" not in r.note or "-1×" in r.note for r in ours.values()), rows
    assert "'ok'" in rows[-1].note and "'replay'" in rows[-1].note


def test_render_quick() -> None:
    from bench import render

    assert render.ours()().replace("&#39;", "'").replace("<Hangup/>", "<Hangup />") == render.sdk()()
    _check(render.run(quick=True), "2 render", ["SDK", "render_twiml"])


def test_capacity_quick() -> None:
    from bench import capacity

    rows = capacity.run(quick=True)
    _check(rows, "3 capacity", ["memory per live call", "place 10 calls", "restore 110 calls", "status webhook"])


def test_turns_quick() -> None:
    from bench import turns

    _check(turns.run(quick=True), "4 turn overhead", ["mock", "twilio"])


@pytest.mark.timeout(60)
def test_startup_quick() -> None:
    from bench import startup

    _check(startup.run(quick=True), "5 start-up", ["--help", "validate-config", "status", "floor"])
