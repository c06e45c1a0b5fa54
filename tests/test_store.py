"""The SQLite call store, against real SQLite files in tmp_path."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from voicecall.engine.errors import VoiceCallError
from voicecall.engine.record import CallRecord, Timer, TranscriptEntry
from voicecall.engine.store import (
    DB_NAME,
    MIGRATIONS,
    Store,
    StoreError,
    StoreLocked,
    StoreReader,
    acquire_runtime_lock,
)


def make_record(call_id: str = "c1", **kw: object) -> CallRecord:
    fields: dict[str, object] = dict(
        call_id=call_id, provider="mock", direction="outbound", mode="conversation",
        flow="conversation", state="listening", from_number="+15550001111",
        to_number="+15550002222", started_at=1_800_000_000.0, provider_call_id=f"p-{call_id}")
    fields.update(kw)
    return CallRecord(**fields)  # type: ignore[arg-type]


def ev(type_: str, at: float = 1_800_000_001.0, **data: object) -> dict[str, object]:
    return {"at": at, "type": type_, "data": data}


@pytest.fixture
async def store(tmp_path: Path):
    s = await Store.open(tmp_path / "store")
    yield s
    await s.close()


async def test_round_trip_with_transcript_and_timers(store: Store) -> None:
    rec = make_record(answered_at=1_800_000_002.5, turn_count=2, vars={"name": "Ann", "n": [1, 2]},
                      transcript=[TranscriptEntry("bot", "Hello", 1_800_000_003.0),
                                  TranscriptEntry("caller", "Hi, a table for two", 1_800_000_004.0)],
                      timers=[Timer("noinput", 1_800_000_010.0)], metrics={"lastTurnLatencyMs": 420})
    await store.commit(rec, events=[ev("call.answered"), ev("speech.final", text="Hi")])
    got = await store.get("c1")
    assert got == rec
    assert got is not rec
    assert await store.find_provider_call("mock", "p-c1") == rec
    assert await store.find_provider_call("twilio", "p-c1") is None
    assert await store.get("nope") is None
    assert [(e["seq"], e["type"], e["data"]) for e in await store.events("c1")] == [
        (1, "call.answered", {}), (2, "speech.final", {"text": "Hi"})]


async def test_commit_snapshots_the_record_at_call_time(store: Store) -> None:
    rec = make_record()
    pending = asyncio.ensure_future(store.commit(rec))
    await asyncio.sleep(0)  # the commit has started: it is queued with its snapshot
    rec.state = "changed-after-commit"
    await pending
    assert (await store.get("c1")).state == "listening"  # type: ignore[union-attr]


async def test_events_append_per_call_across_commits(store: Store) -> None:
    await store.commit(make_record("a"), events=[ev("call.initiated")])
    await store.commit(make_record("b"), events=[ev("call.initiated")])
    await store.commit(make_record("a"), events=[ev("call.ringing"), ev("call.answered")])
    assert [(e["seq"], e["type"]) for e in await store.events("a")] == [
        (1, "call.initiated"), (2, "call.ringing"), (3, "call.answered")]
    assert [e["seq"] for e in await store.events("b")] == [1]


async def test_unserialisable_commit_writes_nothing(store: Store) -> None:
    with pytest.raises(TypeError):
        await store.commit(make_record(), events=[ev("dtmf", digits=object())], replay_key="k1")
    with pytest.raises(ValueError):
        await store.commit(make_record(), events=[ev("dtmf", x=float("nan"))], replay_key="k1")
    assert await store.get("c1") is None
    assert await store.events("c1") == []
    assert not await store.seen("k1")


async def test_failure_inside_the_transaction_rolls_back_that_commit_only(store: Store) -> None:
    # The record row goes in first, then an event violates NOT NULL: the record
    # and the replay key must vanish with it, while neighbours in the same group commit stay.
    good = [store.commit(make_record(f"g{i}"), events=[ev("call.initiated")], replay_key=f"g{i}")
            for i in range(10)]
    bad = store.commit(make_record("bad"), events=[ev("call.initiated"), {"at": 1.0, "type": None}],
                       replay_key="bad", audit={"kind": "rpc", "data": {}})
    results = await asyncio.gather(*good, bad, return_exceptions=True)
    assert results[:10] == [None] * 10
    assert isinstance(results[10], sqlite3.IntegrityError)
    assert await store.get("bad") is None
    assert await store.events("bad") == []
    assert not await store.seen("bad")
    assert await store.audit_rows() == []
    assert [await store.seen(f"g{i}") for i in range(10)] == [True] * 10
    assert store.stats.failed == 1


async def test_claim_is_once_and_survives_reopen(tmp_path: Path) -> None:
    s = await Store.open(tmp_path)
    assert await s.claim("evt-1", 100.0) is True
    assert await s.claim("evt-1", 101.0) is False
    assert await s.seen("evt-1")
    assert not await s.seen("evt-2")
    await s.commit(None, replay_key="evt-2")
    await s.close()
    s = await Store.open(tmp_path)
    try:
        assert await s.claim("evt-1", 200.0) is False
        assert await s.claim("evt-2", 200.0) is False
        assert await s.prune_replay(150.0) == 1
        assert await s.claim("evt-1", 201.0) is True
    finally:
        await s.close()


async def test_concurrent_commits_are_durable_and_grouped(tmp_path: Path) -> None:
    s = await Store.open(tmp_path)
    await asyncio.gather(*(s.commit(make_record(f"c{i}"), events=[ev("call.initiated")],
                                    replay_key=f"k{i}") for i in range(200)))
    assert s.stats.commits == 200
    assert s.stats.transactions < 200
    await s.close()
    reader = StoreReader(tmp_path)
    try:
        assert len(reader.calls(limit=1000)) == 200
        assert reader.events("c199")[0]["type"] == "call.initiated"
    finally:
        reader.close()


async def test_reader_sees_writes_while_the_runtime_runs(store: Store) -> None:
    reader = StoreReader(store.directory)
    try:
        assert reader.calls() == []
        await store.commit(make_record("a"))
        assert reader.get("a") == make_record("a")
        records, mark = reader.changes(0.0)
        assert [r.call_id for r in records] == ["a"]
        assert reader.changed_since(mark) == []
        await store.commit(make_record("b"))
        await store.commit(make_record("a", state="completed", ended_at=1_800_000_100.0))
        assert [r.call_id for r in reader.changed_since(mark)] == ["b", "a"]
        assert [r.call_id for r in reader.calls(active_only=True)] == ["b"]
        with pytest.raises(sqlite3.OperationalError):  # read-only connection
            reader._conn.execute("DELETE FROM calls")
    finally:
        reader.close()


async def test_live_and_recent_calls(store: Store) -> None:
    await store.commit(make_record("old", started_at=1.0))
    await store.commit(make_record("new", started_at=3.0))
    await store.commit(make_record("done", started_at=2.0, state="completed", ended_at=5.0))
    await store.commit(make_record("ended", started_at=4.0, ended_at=6.0))
    assert [r.call_id for r in await store.live_calls()] == ["old", "new"]
    assert [r.call_id for r in await store.recent_calls(limit=3)] == ["ended", "new", "done"]


async def test_flows_and_audit(store: Store) -> None:
    await store.put_flow("h1", "ivr", "flow: ivr\n")
    await store.put_flow("h1", "ivr", "flow: ivr\n")
    assert await store.get_flow("h1") == ("ivr", "flow: ivr\n")
    assert await store.get_flow("h2") is None
    await store.commit(None, audit={"kind": "rpc.call", "at": 5.0, "data": {"to": "+1555"}})
    await store.commit(None, audit={"kind": "inbound.rejected", "data": {}})
    assert [(r["kind"], r["data"]) for r in await store.audit_rows()] == [
        ("rpc.call", {"to": "+1555"}), ("inbound.rejected", {})]
    assert [r["at"] for r in await store.audit_rows("rpc.call")] == [5.0]


async def test_malformed_commits_are_refused(store: Store) -> None:
    with pytest.raises(StoreError, match="events need the record"):
        await store.commit(None, events=[ev("call.initiated")])
    with pytest.raises(StoreError, match="needs 'at' and 'type'"):
        await store.commit(make_record(), events=[{"type": "dtmf"}])
    with pytest.raises(StoreError, match="needs a 'kind'"):
        await store.commit(None, audit={"data": {}})
    assert await store.get("c1") is None


async def test_file_modes_and_migrations(tmp_path: Path) -> None:
    directory = tmp_path / "deep" / "store"
    s = await Store.open(directory)
    await s.commit(make_record())
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for name in os.listdir(directory):  # the db and its -wal/-shm files
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600, name
    await s.close()
    conn = sqlite3.connect(directory / DB_NAME)
    try:
        assert conn.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
        conn.commit()
    finally:
        conn.close()
    with pytest.raises(StoreError, match="newer than this voicecall"):
        await Store.open(directory)


async def test_a_file_that_is_not_sqlite_is_refused_clearly(tmp_path: Path) -> None:
    (tmp_path / DB_NAME).write_bytes(b"this is not a database, just some bytes" * 100)
    with pytest.raises(StoreError, match=r"cannot (open|prepare) call store .*not a database"):
        await Store.open(tmp_path)


async def test_existing_loose_directory_is_tightened(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    s = await Store.open(tmp_path)
    await s.close()
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o700


async def test_close_drains_pending_writes(tmp_path: Path) -> None:
    s = await Store.open(tmp_path)
    tasks = [asyncio.ensure_future(s.commit(make_record(f"c{i}"))) for i in range(50)]
    await asyncio.sleep(0)  # every task has queued its write
    await s.close()
    await asyncio.gather(*tasks)
    with pytest.raises(StoreError, match="closed"):
        await s.commit(make_record("late"))
    reader = StoreReader(tmp_path)
    try:
        assert len(reader.calls(limit=100)) == 50
    finally:
        reader.close()


def test_reader_without_a_store_says_so(tmp_path: Path) -> None:
    with pytest.raises(VoiceCallError, match=r"no call store at .*calls\.sqlite3"):
        StoreReader(tmp_path)
    (tmp_path / DB_NAME).write_bytes(b"")
    with pytest.raises(StoreError, match="not a voicecall store"):
        StoreReader(tmp_path)


def test_runtime_lock_refuses_a_second_holder_in_process(tmp_path: Path) -> None:
    lock = acquire_runtime_lock(tmp_path)
    try:
        # flock locks belong to the open file description, so a second open()
        # in this same process conflicts just like another process would.
        with pytest.raises(StoreLocked) as info:
            acquire_runtime_lock(tmp_path)
        pid, host, started = (tmp_path / "runtime.lock").read_text().split()
        assert pid == str(os.getpid()) and host == socket.gethostname()
        assert str(info.value) == (f"another runtime (pid {pid} on {host}, started {started}) "
                                   f"holds {tmp_path / 'runtime.lock'}")
    finally:
        lock.release()
    acquire_runtime_lock(tmp_path).release()


def test_runtime_lock_held_by_another_process(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys
        from voicecall.engine.store import acquire_runtime_lock
        lock = acquire_runtime_lock({str(tmp_path)!r})
        print("locked", flush=True)
        sys.stdin.readline()
        lock.release()
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"
        with pytest.raises(StoreLocked, match=rf"another runtime \(pid {child.pid} on "
                                              rf"{socket.gethostname()}, started 20\d\d-"):
            acquire_runtime_lock(tmp_path)
    finally:
        assert child.stdin is not None
        child.stdin.write("\n")
        child.stdin.close()
        child.wait(timeout=30)
        child.stdout.close()  # type: ignore[union-attr]
    acquire_runtime_lock(tmp_path).release()
