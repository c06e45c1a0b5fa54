"""``status``, ``tail`` and ``latency`` against a store filled with
``Store.commit`` and against JSONL files; exact text and JSON."""

from __future__ import annotations

import asyncio
import json
import queue
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from voicecall.engine.cli import cli
from voicecall.engine.cli.status import summarise
from voicecall.engine.record import CallRecord, TranscriptEntry
from voicecall.engine.store import Store

from .conftest import VOICECALL, free_port, write_config

T0 = 1_800_000_000.0   # 2027-01-15T08:00:00.000Z


def record(call_id: str, **kw: Any) -> CallRecord:
    fields: dict[str, Any] = dict(
        call_id=call_id, provider="mock", direction="outbound", mode="conversation", flow="conversation",
        state="listening", from_number="+15550001111", to_number="+15550002222", started_at=T0,
        provider_call_id=f"MC-{call_id}")
    fields.update(kw)
    return CallRecord(**fields)


def commit(store_dir: Path, *items: tuple[CallRecord, list[Mapping[str, Any]]]) -> None:
    async def run() -> None:
        store = await Store.open(store_dir)
        try:
            for rec, events in items:
                await store.commit(rec, events=events)
        finally:
            await store.close()

    asyncio.run(run())


@pytest.fixture
def config(tmp_path: Path) -> str:
    # A control port where nothing listens: status falls back to the store.
    return write_config(tmp_path / "voicecall.yaml",
                        f"provider: mock\ncontrol: {{port: {free_port()}}}\nstore: {tmp_path / 'store'}\n")


@pytest.fixture
def filled(tmp_path: Path, config: str) -> dict[str, CallRecord]:
    calls = {
        "out-1": record("out-1", answered_at=T0 + 2, turn_count=2, transcript=[
            TranscriptEntry("bot", "Hello there", T0 + 3), TranscriptEntry("caller", "Hi, who is this?", T0 + 5.5)]),
        "in-22": record("in-22", direction="inbound", from_number="+15557770000", to_number="+15550001111",
                        state="answered", started_at=T0 + 65.25, flow="inbound_greeting"),
        "done": record("done", state="completed", started_at=T0 - 600, answered_at=T0 - 590, ended_at=T0 - 500,
                       end_reason="completed", mode="notify", flow="notify"),
    }
    commit(tmp_path / "store", *((r, []) for r in calls.values()))
    return calls


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_status_lists_active_calls_as_a_table(config: str, filled: dict[str, CallRecord]) -> None:
    result = invoke("status", "--config", config)
    assert result.exit_code == 0
    assert result.stdout == (
        "ID     STATE      DIRECTION  TO/FROM       STARTED              TURNS\n"
        "out-1  listening  outbound   +15550002222  2027-01-15 08:00:00  2\n"
        "in-22  answered   inbound    +15557770000  2027-01-15 08:01:05  0\n")


def test_status_json_is_the_contract_records(config: str, filled: dict[str, CallRecord]) -> None:
    result = invoke("status", "--json", "--config", config)
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"calls": [filled["out-1"].to_public(), filled["in-22"].to_public()]}
    assert json.loads(result.stdout)["calls"][0] == {
        "callId": "out-1", "provider": "mock", "providerCallId": "MC-out-1", "direction": "outbound",
        "mode": "conversation", "flow": "conversation", "state": "listening", "terminal": False,
        "from": "+15550001111", "to": "+15550002222", "startedAt": "2027-01-15T08:00:00.000Z",
        "answeredAt": "2027-01-15T08:00:02.000Z", "endedAt": None, "endReason": None, "turnCount": 2,
        "transcript": [{"role": "bot", "text": "Hello there", "at": "2027-01-15T08:00:03.000Z"},
                       {"role": "caller", "text": "Hi, who is this?", "at": "2027-01-15T08:00:05.500Z"}]}


def test_status_of_one_call_as_text_and_json(config: str, filled: dict[str, CallRecord]) -> None:
    result = invoke("status", "--call-id", "out-1", "--config", config)
    assert result.exit_code == 0
    assert result.stdout == (
        "Call out-1\n"
        "State:       listening (live)\n"
        "Direction:   outbound, +15550001111 -> +15550002222\n"
        "Flow:        conversation (mode conversation)\n"
        "Provider:    mock (MC-out-1)\n"
        "Started:     2027-01-15T08:00:00.000Z\n"
        "Answered:    2027-01-15T08:00:02.000Z\n"
        "Ended:       -\n"
        "End reason:  -\n"
        "Turns:       2\n"
        "Transcript:\n"
        "  08:00:03 bot: Hello there\n"
        "  08:00:05 caller: Hi, who is this?\n")
    ended = invoke("status", "--call-id", "done", "--config", config)
    assert "State:       completed (ended)\n" in ended.stdout
    assert "Transcript:  (empty)\n" in ended.stdout
    doc = invoke("status", "--call-id", "done", "--json", "--config", config)
    assert json.loads(doc.stdout) == filled["done"].to_public()


def test_status_of_an_unknown_call(config: str, filled: dict[str, CallRecord]) -> None:
    result = invoke("status", "--call-id", "nope", "--config", config)
    assert (result.exit_code, result.stdout, result.stderr) == (1, "", "Error: no call nope\n")
    result = invoke("status", "--call-id", "nope", "--json", "--config", config)
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {"error": {"code": "call_not_found", "message": "no call nope"}}


def test_status_with_no_store_yet(config: str) -> None:
    assert invoke("status", "--config", config).stdout == "No active calls.\n"
    assert json.loads(invoke("status", "--json", "--config", config).stdout) == {"calls": []}
    result = invoke("status", "--call-id", "x", "--config", config)
    assert (result.exit_code, result.stderr) == (1, "Error: no call x\n")


def test_status_with_a_broken_config_exits_1(tmp_path: Path) -> None:
    bad = write_config(tmp_path / "bad.yaml", "provider: nope\n")
    result = invoke("status", "--config", bad)
    assert result.exit_code == 1
    assert result.stderr.endswith("Error: the config has 1 problem\n")
    assert "Traceback" not in result.stdout


# ---------------------------------------------------------------- tail

class Lines:
    """A subprocess's stdout, line by line, with a time-out per line."""

    def __init__(self, args: list[str]):
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def next(self, timeout: float = 20.0) -> str | None:
        return self._queue.get(timeout=timeout)

    def stop(self) -> tuple[int, str]:
        self.proc.terminate()
        code = self.proc.wait(20)
        assert self.proc.stderr is not None
        with self.proc.stderr:
            err = self.proc.stderr.read()
        return code, err


def test_tail_prints_the_last_records_then_follows_changes(tmp_path: Path, config: str,
                                                           filled: dict[str, CallRecord]) -> None:
    once = invoke("tail", "--since", "2", "--max-seconds", "0", "--config", config)
    assert once.exit_code == 0
    assert [json.loads(ln)["callId"] for ln in once.stdout.splitlines()] == ["in-22", "done"]
    assert once.stdout.splitlines()[0] == json.dumps(filled["in-22"].to_public(), ensure_ascii=False)

    tail = Lines([VOICECALL, "tail", "--since", "1", "--poll", "50", "--config", config])
    try:
        assert json.loads(tail.next() or "")["callId"] == "done"   # started: now it follows
        changed = filled["out-1"]
        changed.state, changed.turn_count = "speaking", 3
        commit(tmp_path / "store", (changed, []))
        line = tail.next()
        assert line is not None and json.loads(line) == changed.to_public()
        new = record("new-3", started_at=T0 + 100)
        commit(tmp_path / "store", (new, []))
        assert json.loads(tail.next() or "") == new.to_public()
    finally:
        code, err = tail.stop()
    assert (code, err) == (0, "")


def test_tail_follows_a_jsonl_file_through_appends_and_truncation(tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    log.write_text('{"n": 1}\n\n{"n": 2}\n{"n": 3}\n{"n": 4, "partial"', encoding="utf-8")
    once = invoke("tail", "--file", str(log), "--since", "2", "--max-seconds", "0")
    assert once.stdout == '{"n": 2}\n{"n": 3}\n'

    tail = Lines([VOICECALL, "tail", "--file", str(log), "--since", "1", "--poll", "50"])
    try:
        assert tail.next() == '{"n": 3}'
        with log.open("a", encoding="utf-8") as handle:
            handle.write(': true}\n{"n": 5}\n{"n": 6')   # completes 4, adds 5, 6 still partial
            handle.flush()
            assert tail.next() == '{"n": 4, "partial": true}'
            assert tail.next() == '{"n": 5}'
            handle.write("}\n")
        assert tail.next() == '{"n": 6}'
        log.write_text('{"fresh": 1}\n', encoding="utf-8")   # truncated: a fresh stream
        assert tail.next() == '{"fresh": 1}'
    finally:
        code, err = tail.stop()
    assert (code, err) == (0, "")


def test_tail_of_a_missing_file(tmp_path: Path) -> None:
    result = invoke("tail", "--file", str(tmp_path / "none.jsonl"), "--max-seconds", "0")
    assert (result.exit_code, result.stderr) == (1, f"Error: no such file: {tmp_path / 'none.jsonl'}\n")


def test_tail_refuses_a_poll_below_50_ms(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["tail", "--poll", "10"])
    assert result.exit_code == 2
    assert "10 is not in the range x>=50" in result.stderr


# ---------------------------------------------------------------- latency

def turn(latency: float | None, wait: float | None, at: float = T0 + 10) -> dict[str, Any]:
    return {"at": at, "type": "metrics.turn", "data": {"turnLatencyMs": latency, "listenWaitMs": wait}}


def test_summarise_uses_nearest_rank_percentiles() -> None:
    samples = [float(v) for v in range(1, 21)]     # 1..20
    assert summarise(samples) == {"min": 1.0, "avg": 10.5, "p50": 10.0, "p95": 19.0, "max": 20.0}
    assert summarise([7.0]) == {"min": 7.0, "avg": 7.0, "p50": 7.0, "p95": 7.0, "max": 7.0}
    assert summarise([]) == {"min": None, "avg": None, "p50": None, "p95": None, "max": None}


def test_latency_from_the_store(tmp_path: Path, config: str) -> None:
    commit(tmp_path / "store",
           (record("a", started_at=T0), [turn(400, 1200), turn(250, None), {"at": T0, "type": "speech.final",
                                                                           "data": {"text": "hi"}}]),
           (record("b", started_at=T0 + 1), [turn(1000, 800), turn(310.5, 2000)]),
           (record("c", started_at=T0 + 2), []))
    result = invoke("latency", "--json", "--config", config)
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "recordsScanned": 3,
        "turnLatency": {"min": 250.0, "avg": 490.1, "p50": 310.5, "p95": 1000.0, "max": 1000.0},
        "listenWait": {"min": 800.0, "avg": 1333.3, "p50": 1200.0, "p95": 2000.0, "max": 2000.0},
    }
    text = invoke("latency", "--config", config)
    assert text.stdout == (
        "Records scanned: 3\n"
        "METRIC             SAMPLES  MIN  AVG     P50    P95   MAX\n"
        "turn latency (ms)  4        250  490.1   310.5  1000  1000\n"
        "listen wait (ms)   3        800  1333.3  1200   2000  2000\n")
    # --last 1: only the most recently started call (c, no samples).
    last = json.loads(invoke("latency", "--json", "--last", "1", "--config", config).stdout)
    assert last == {"recordsScanned": 1,
                    "turnLatency": {"min": None, "avg": None, "p50": None, "p95": None, "max": None},
                    "listenWait": {"min": None, "avg": None, "p50": None, "p95": None, "max": None}}


def test_latency_from_a_jsonl_file(tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    log.write_text("\n".join([
        json.dumps({"callId": "x", "metrics": {"lastTurnLatencyMs": 900}}),
        json.dumps({"callId": "a", "metrics": {"lastTurnLatencyMs": 100, "lastListenWaitMs": 50}}),
        "{not json",
        "",
        json.dumps({"callId": "b", "metadata": {"lastTurnLatencyMs": 300, "lastTurnListenWaitMs": 150}}),
        json.dumps({"callId": "c", "metadata": {"lastTurnLatencyMs": "fast", "lastTurnListenWaitMs": True}}),
        json.dumps({"callId": "d", "metrics": {"lastTurnLatencyMs": 200}}),   # last line: no newline
    ]), encoding="utf-8")
    result = invoke("latency", "--file", str(log), "--last", "5", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "recordsScanned": 4,
        "turnLatency": {"min": 100.0, "avg": 200.0, "p50": 200.0, "p95": 300.0, "max": 300.0},
        "listenWait": {"min": 50.0, "avg": 100.0, "p50": 50.0, "p95": 150.0, "max": 150.0},
    }


def test_latency_of_a_missing_file(tmp_path: Path) -> None:
    result = invoke("latency", "--file", str(tmp_path / "none.jsonl"), "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {"error": {"code": "file_not_found",
                                                   "message": f"no such file: {tmp_path / 'none.jsonl'}"}}
