"""Each benchmark runs for a few iterations and yields table rows.

No timing is asserted (timings belong to ``make bench``): only that every
benchmark still drives the real code paths end to end and reports numbers.
"""

from __future__ import annotations

import math
import sqlite3

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


# ---- the optimisations made for the benchmarks keep their guarantees


def test_stored_keys_never_forgets_a_key() -> None:
    import hashlib

    from voicecall.engine.security import StoredKeys

    keys = [f"twilio:{hashlib.sha256(str(i).encode()).hexdigest()}" for i in range(20000)]
    stored = StoredKeys(bits=1 << 18)
    for key in keys[:10000]:
        stored.add(key)
    assert all(key in stored for key in keys[:10000])          # no false negative, ever
    false_positives = sum(key in stored for key in keys[10000:])
    assert false_positives < 200                                # ~1% at 10k keys in 256 Kibit
    with pytest.raises(ValueError):
        StoredKeys(bits=1000)


def test_record_json_matches_to_storage_as_the_transcript_grows() -> None:
    import json

    from voicecall.engine.record import CallRecord, Timer
    from voicecall.engine.store import TranscriptJson, record_json

    def plain(record: CallRecord) -> str:
        return json.dumps(record.to_storage(), allow_nan=False, separators=(",", ":"))

    cache = TranscriptJson()
    record = CallRecord(call_id="c1", provider="twilio", direction="outbound", mode="conversation", flow="f",
                        state="listening", from_number="+1", to_number="+2", started_at=1.0,
                        vars={"nested": [1, {"x": "\x00transcript"}]}, turn="t")
    for i in range(40):
        record.say("caller" if i % 2 else "bot", f"line {i} \"quoted\" é", 1000.0 + i)
        if i == 20:
            record.transcript[3].text = "changed in place"      # caught by value, re-encoded
        if i == 30:
            record.transcript.pop(0)
            record.timers.append(Timer("flow:x", 5.0))
        assert record_json(record, cache) == plain(record) == record_json(record)
    record.ended_at = 2000.0                                    # terminal: the cache lets go
    assert record_json(record, cache) == plain(record)
    assert "c1" not in cache._calls


async def test_store_event_seqs_stay_dense_across_a_failed_write(tmp_path) -> None:
    from voicecall.engine.record import CallRecord
    from voicecall.engine.store import Store

    store = await Store.open(tmp_path)
    try:
        record = CallRecord(call_id="c1", provider="mock", direction="outbound", mode="notify", flow="f",
                            state="s", from_number="+1", to_number="+2", started_at=1.0)
        await store.commit(record, events=[{"at": 1.0, "type": "a"}, {"at": 1.0, "type": "b"}])
        # Fails in the writer after its event row went in (audit kind NOT NULL):
        # the row is rolled back, and the remembered seq must not skip over it.
        with pytest.raises(sqlite3.IntegrityError):
            await store.commit(record, events=[{"at": 1.0, "type": "c"}], audit={"kind": None})
        await store.commit(record, events=[{"at": 1.0, "type": "d"}])
        assert [(e["seq"], e["type"]) for e in await store.events("c1")] == [(1, "a"), (2, "b"), (3, "d")]
    finally:
        await store.close()
