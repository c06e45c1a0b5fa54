"""``status``, ``tail`` and ``latency`` (DESIGN §5).

``status`` asks a running ``serve`` over the control listener and reads the
store only when nothing listens there; ``tail`` and ``latency`` read the store
(read-only, safe beside a running runtime) or a JSONL export given with
``--file``. Only light modules are imported here; aiohttp comes in through
the control client when ``status`` needs it.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .serve import fail, load_or_exit

if TYPE_CHECKING:
    from voicecall.engine.config import Settings
    from voicecall.engine.store import StoreReader


# ---------------------------------------------------------------- status

@click.command("status")
@click.option("--call-id", "call_id", help="One call instead of the active ones.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Config file.")
def status(call_id: str | None, as_json: bool, config_path: str | None) -> None:
    """Show one call (--call-id), or the active calls as a table."""
    settings = load_or_exit(config_path, as_json)
    result = _status_from_serve(settings, call_id, as_json)
    if result is None:
        result = _status_from_store(settings, call_id, as_json)
    if as_json:
        click.echo(json.dumps(result, indent=2, ensure_ascii=False))
    elif call_id:
        click.echo(format_call(result))
    else:
        click.echo(format_table(result["calls"]))


def _status_from_serve(settings: Settings, call_id: str | None, as_json: bool) -> dict[str, Any] | None:
    """The running runtime's answer; None when nothing listens (then: the store)."""
    import asyncio

    from voicecall.engine.client import ControlClient, ControlClientError, NotListening, RemoteError

    params = {"callId": call_id} if call_id else {}
    try:
        result = asyncio.run(ControlClient(settings, timeout=10).call("voicecall.status", params))
    except NotListening:
        return None
    except RemoteError as exc:
        if exc.code == "call_not_found":
            fail(f"no call {call_id}", "call_not_found", as_json)
        fail(str(exc), exc.code, as_json)
    except ControlClientError as exc:
        fail(str(exc), exc.code, as_json)
    if not isinstance(result, dict) or (not call_id and not isinstance(result.get("calls"), list)):
        fail("the control listener answered voicecall.status with an unexpected result", "rpc_error", as_json)
    return result


def _status_from_store(settings: Settings, call_id: str | None, as_json: bool) -> dict[str, Any]:
    from voicecall.engine.store import DB_NAME, StoreError, StoreReader

    if not (settings.store_dir / DB_NAME).is_file():
        if call_id:
            fail(f"no call {call_id}", "call_not_found", as_json)
        return {"calls": []}
    try:
        reader = StoreReader(settings.store_dir)
        try:
            if call_id:
                record = reader.get(call_id)
                if record is None:
                    fail(f"no call {call_id}", "call_not_found", as_json)
                return record.to_public()
            live = sorted(reader.calls(active_only=True, limit=10_000), key=lambda r: r.started_at)
            return {"calls": [r.to_public() for r in live]}
        finally:
            reader.close()
    except StoreError as exc:
        fail(str(exc), exc.code, as_json)


def _short_time(value: Any) -> str:
    """``2026-11-22T01:02:03.456Z`` → ``2026-11-22 01:02:03``."""
    return str(value)[:19].replace("T", " ") if value else "-"


def format_table(calls: list[Mapping[str, Any]]) -> str:
    """Active calls, one a row, columns padded to their widest cell."""
    if not calls:
        return "No active calls."
    header = ("ID", "STATE", "DIRECTION", "TO/FROM", "STARTED", "TURNS")
    rows = [header] + [(
        str(c.get("callId")), str(c.get("state")), str(c.get("direction")),
        str(c.get("from") if c.get("direction") == "inbound" else c.get("to")),
        _short_time(c.get("startedAt")), str(c.get("turnCount", 0)),
    ) for c in calls]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def format_call(call: Mapping[str, Any]) -> str:
    """One call record as a readable block, transcript last."""
    def show(value: Any) -> str:
        return "-" if value in (None, "") else str(value)

    lines = [
        f"Call {call.get('callId')}",
        f"State:       {call.get('state')} ({'ended' if call.get('terminal') else 'live'})",
        f"Direction:   {call.get('direction')}, {show(call.get('from'))} -> {show(call.get('to'))}",
        f"Flow:        {call.get('flow')} (mode {call.get('mode')})",
        f"Provider:    {call.get('provider')} ({show(call.get('providerCallId'))})",
        f"Started:     {show(call.get('startedAt'))}",
        f"Answered:    {show(call.get('answeredAt'))}",
        f"Ended:       {show(call.get('endedAt'))}",
        f"End reason:  {show(call.get('endReason'))}",
        f"Turns:       {call.get('turnCount', 0)}",
    ]
    transcript = call.get("transcript") or []
    if not transcript:
        lines.append("Transcript:  (empty)")
    else:
        lines.append("Transcript:")
        lines += [f"  {str(t.get('at'))[11:19]} {t.get('role')}: {t.get('text')}" for t in transcript]
    return "\n".join(lines)


# ---------------------------------------------------------------- tail

def _interrupted(*_args: object) -> None:
    raise KeyboardInterrupt


@click.command("tail")
@click.option("--file", "file", type=click.Path(dir_okay=False), help="A JSONL export to follow instead of the store.")
@click.option("--since", type=click.IntRange(min=0), default=25, show_default=True,
              help="Records to print before following.")
@click.option("--poll", type=click.IntRange(min=50), default=250, show_default=True, help="Poll interval (ms).")
@click.option("--max-seconds", type=float, hidden=True, help="Stop after this long (tests).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Config file.")
def tail(file: str | None, since: int, poll: int, max_seconds: float | None, config_path: str | None) -> None:
    """Follow call records as they change, one JSON line each."""
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    signal.signal(signal.SIGTERM, _interrupted)
    try:
        if file:
            follower: Iterator[str] = _follow_file(Path(file), since, poll / 1000, deadline)
        else:
            follower = _follow_store(load_or_exit(config_path), since, poll / 1000, deadline)
        for line in follower:
            click.echo(line)
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass


def _sleep_until_next(interval: float, deadline: float | None) -> bool:
    """Sleep one poll; False once the deadline has passed."""
    if deadline is not None and time.monotonic() >= deadline:
        return False
    time.sleep(interval if deadline is None else max(0.0, min(interval, deadline - time.monotonic())))
    return True


def _follow_store(settings: Settings, since: int, interval: float, deadline: float | None) -> Iterator[str]:
    from voicecall.engine.store import DB_NAME, StoreError, StoreReader

    waiting = False
    while not (settings.store_dir / DB_NAME).is_file():
        if not waiting:
            click.echo(f"waiting for the call store at {settings.store_dir}", err=True)
            waiting = True
        if not _sleep_until_next(interval, deadline):
            return
    try:
        reader: StoreReader = StoreReader(settings.store_dir)
    except StoreError as exc:
        fail(str(exc), exc.code)
    try:
        records, mark = reader.changes(0.0)
        for record in records[len(records) - since:] if since else []:
            yield _line(record.to_public())
        while _sleep_until_next(interval, deadline):
            records, mark = reader.changes(mark)
            for record in records:
                yield _line(record.to_public())
    finally:
        reader.close()


def _line(record: Mapping[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False)


def _follow_file(path: Path, since: int, interval: float, deadline: float | None) -> Iterator[str]:
    """Complete lines only (a partial line waits for its newline); a replaced or
    truncated file starts a fresh stream from its beginning."""
    try:
        stat = path.stat()
        data = path.read_bytes()
    except FileNotFoundError:
        fail(f"no such file: {path}")
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    end = data.rfind(b"\n") + 1
    lines = [ln for ln in _decode_lines(data[:end])]
    yield from lines[len(lines) - since:] if since else []
    inode, position = stat.st_ino, end
    while _sleep_until_next(interval, deadline):
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue  # being replaced; the new file starts a fresh stream
        if stat.st_ino != inode or stat.st_size < position:
            inode, position = stat.st_ino, 0
        if stat.st_size == position:
            continue
        with path.open("rb") as handle:
            handle.seek(position)
            chunk = handle.read()
        end = chunk.rfind(b"\n") + 1
        position += end
        yield from _decode_lines(chunk[:end])


def _decode_lines(data: bytes) -> Iterable[str]:
    for raw in data.split(b"\n"):
        text = raw.decode("utf-8", "replace").strip()
        if text:
            yield text


# ---------------------------------------------------------------- latency

@click.command("latency")
@click.option("--file", "file", type=click.Path(dir_okay=False), help="A JSONL file of call records.")
@click.option("--last", type=click.IntRange(min=1), default=200, show_default=True,
              help="How many recent records (calls) to analyse.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Config file.")
def latency(file: str | None, last: int, as_json: bool, config_path: str | None) -> None:
    """Summarise turn latency and listen wait (ms)."""
    if file:
        scanned, turns, waits = _samples_from_file(Path(file), last, as_json)
    else:
        scanned, turns, waits = _samples_from_store(load_or_exit(config_path, as_json), last, as_json)
    turn_stats, wait_stats = summarise(turns), summarise(waits)
    report = {"recordsScanned": scanned, "turnLatency": turn_stats, "listenWait": wait_stats}
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"Records scanned: {scanned}")
    rows: list[tuple[str, ...]] = [("METRIC", "SAMPLES", "MIN", "AVG", "P50", "P95", "MAX")]
    for name, samples, stats in (("turn latency (ms)", turns, turn_stats),
                                 ("listen wait (ms)", waits, wait_stats)):
        rows.append((name, str(len(samples)), *(_ms(stats[k]) for k in ("min", "avg", "p50", "p95", "max"))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def summarise(samples: list[float]) -> dict[str, float | None]:
    """min/avg/p50/p95/max; percentiles by nearest rank (always a real sample)."""
    if not samples:
        return dict.fromkeys(("min", "avg", "p50", "p95", "max"))
    ordered = sorted(samples)

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

    return {"min": ordered[0], "avg": round(sum(ordered) / len(ordered), 1), "p50": rank(50),
            "p95": rank(95), "max": ordered[-1]}


def _samples_from_store(settings: Settings, last: int, as_json: bool) -> tuple[int, list[float], list[float]]:
    from voicecall.engine.store import DB_NAME, StoreError, StoreReader

    if not (settings.store_dir / DB_NAME).is_file():
        return 0, [], []
    turns: list[float] = []
    waits: list[float] = []
    try:
        reader = StoreReader(settings.store_dir)
        try:
            calls = reader.calls(limit=last)
            for record in calls:
                for event in reader.events(record.call_id):
                    if event["type"] != "metrics.turn" or not isinstance(event["data"], Mapping):
                        continue
                    _add(turns, event["data"].get("turnLatencyMs"))
                    _add(waits, event["data"].get("listenWaitMs"))
        finally:
            reader.close()
    except StoreError as exc:
        fail(str(exc), exc.code, as_json)
    return len(calls), turns, waits


def _add(samples: list[float], value: Any) -> None:
    number = _number(value)
    if number is not None:
        samples.append(number)


def _samples_from_file(path: Path, last: int, as_json: bool) -> tuple[int, list[float], list[float]]:
    """The last ``last`` non-empty lines; malformed JSON is skipped; a final
    record without a newline counts."""
    try:
        text = path.read_bytes().decode("utf-8", "replace")
    except FileNotFoundError:
        fail(f"no such file: {path}", "file_not_found", as_json)
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}", "file_unreadable", as_json)
    lines = [ln for ln in (raw.strip() for raw in text.split("\n")) if ln][-last:]
    scanned = 0
    turns: list[float] = []
    waits: list[float] = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        scanned += 1
        metrics = record["metrics"] if isinstance(record.get("metrics"), dict) else {}
        metadata = record["metadata"] if isinstance(record.get("metadata"), dict) else {}
        turn = metrics.get("lastTurnLatencyMs", metadata.get("lastTurnLatencyMs"))
        wait = metrics.get("lastListenWaitMs", metadata.get("lastTurnListenWaitMs"))
        _add(turns, turn)
        _add(waits, wait)
    return scanned, turns, waits
