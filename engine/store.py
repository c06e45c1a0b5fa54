"""SQLite call store (DESIGN §4 "Calls survive a restart").

One writer thread owns the write connection and is fed by a queue, so SQLite
never blocks the event loop. Writes that queue up while a transaction commits
go into the next transaction (group commit); each caller's writes sit in their
own SAVEPOINT, so one failing ``commit()`` never takes its neighbours down,
and its future resolves only after the transaction holding it has committed.
Reads run on a second thread with their own connection (WAL lets them proceed
while the writer commits).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import json
import operator
import os
import queue
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .errors import VoiceCallError
from .record import CallRecord, iso

T = TypeVar("T")


DB_NAME = "calls.sqlite3"
SEQ_CACHE_CALLS = 50_000       # calls whose last event seq the writer remembers
LOCK_NAME = "runtime.lock"

# Append-only: step N brings user_version N-1 to N. Never edit a released step.
MIGRATIONS: list[tuple[str, ...]] = [
    (
        "CREATE TABLE calls(call_id TEXT PRIMARY KEY NOT NULL, provider TEXT NOT NULL,"
        " provider_call_id TEXT, state TEXT NOT NULL, terminal INTEGER NOT NULL,"
        " started_at REAL NOT NULL, updated_at REAL NOT NULL, record TEXT NOT NULL)",
        "CREATE INDEX calls_provider ON calls(provider, provider_call_id)",
        "CREATE INDEX calls_terminal ON calls(terminal)",
        "CREATE INDEX calls_updated ON calls(updated_at)",
        "CREATE TABLE events(call_id TEXT NOT NULL, seq INTEGER NOT NULL, at REAL NOT NULL,"
        " type TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY(call_id, seq))",
        "CREATE TABLE replay(key TEXT PRIMARY KEY NOT NULL, at REAL NOT NULL)",
        "CREATE INDEX replay_at ON replay(at)",
        "CREATE TABLE flows(hash TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL,"
        " source TEXT NOT NULL)",
        "CREATE TABLE audit(id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL,"
        " kind TEXT NOT NULL, data TEXT NOT NULL)",
    ),
]


class StoreError(VoiceCallError):
    code = "store_error"


class StoreLocked(StoreError):
    code = "store_locked"


def secure_directory(directory: Path) -> None:
    """Create the store directory 0700 (calls hold phone numbers and transcripts)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if directory.stat().st_mode & 0o077:
        directory.chmod(0o700)


def _secure_file(path: Path) -> None:
    # Create 0600 before SQLite does: its -wal/-shm files copy the db file's mode.
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)


def _connect(path: Path, *, check_same_thread: bool) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN ourselves, and reads never hold a
    # transaction open between calls (they would pin an old WAL snapshot).
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=check_same_thread,
                           timeout=30.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the missing migration steps; returns the resulting user_version."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > len(MIGRATIONS):
        raise StoreError(f"store schema version {version} is newer than this voicecall "
                         f"understands ({len(MIGRATIONS)}); upgrade voicecall")
    for number in range(version + 1, len(MIGRATIONS) + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[number - 1]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return len(MIGRATIONS)


@dataclass
class StoreStats:
    """Counters for tests and metrics: group commit shows as transactions < commits."""

    transactions: int = 0
    commits: int = 0
    failed: int = 0


_Job = tuple[Callable[[sqlite3.Connection, float], Any], "asyncio.Future[Any]", asyncio.AbstractEventLoop]
_STOP = object()


def _dumps(value: Any) -> str:
    # allow_nan=False: NaN is not JSON, and a record we cannot read back is lost.
    return json.dumps(value, allow_nan=False, separators=(",", ":"))


_FIELDS: dict[type, tuple[tuple[str, ...], Callable[[Any], Any]]] = {}


def _shallow(obj: Any) -> dict[str, Any]:
    """A dataclass instance as a dict of its fields, not copied: the JSON encoder
    walks the values (and calls back here for nested dataclasses)."""
    cls = type(obj)
    known = _FIELDS.get(cls)
    if known is None:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls.__name__} is not JSON serialisable")
        names = tuple(f.name for f in dataclasses.fields(cls))
        # attrgetter of one name returns the value itself, not a 1-tuple.
        def one(o: Any, n: str = names[0]) -> tuple[Any]:
            return (getattr(o, n),)

        getter: Callable[[Any], Any] = operator.attrgetter(*names) if len(names) > 1 else one
        known = _FIELDS[cls] = (names, getter)
    names, get = known
    return dict(zip(names, get(obj), strict=True))


_TRANSCRIPT_MARK = f"\x00transcript {secrets.token_hex(8)}\x00"    # no record value can hold it
_TRANSCRIPT_MARK_JSON = json.dumps(_TRANSCRIPT_MARK)
_LINE = operator.attrgetter("role", "text", "at")


class TranscriptJson:
    """Each live call's transcript as JSON, extended as lines are appended, so a
    commit encodes only the lines it has not encoded before: re-encoding the
    whole transcript at every commit made a long call cost more per turn the
    longer it ran. A line changed in place (nothing does that today) is seen by
    comparing values, and the call's transcript is then encoded afresh."""

    MAX_CALLS = 20_000

    def __init__(self) -> None:
        self._calls: dict[str, tuple[list[tuple[Any, ...]], str]] = {}

    def encode(self, call_id: str, transcript: list[Any], *, keep: bool = True) -> str:
        lines = list(map(_LINE, transcript))
        done, text = self._calls.get(call_id, ([], ""))
        if len(done) > len(lines) or lines[:len(done)] != done:
            done, text = [], ""
        if len(lines) > len(done):
            fresh = json.dumps([{"role": r, "text": t, "at": a} for r, t, a in lines[len(done):]],
                               allow_nan=False, separators=(",", ":"))[1:-1]
            text = f"{text},{fresh}" if text else fresh
        if keep:
            if len(self._calls) >= self.MAX_CALLS and call_id not in self._calls:
                self._calls.clear()
            self._calls[call_id] = (lines, text)
        else:
            self._calls.pop(call_id, None)
        return f"[{text}]"


def record_json(record: CallRecord, transcripts: TranscriptJson | None = None) -> str:
    """``_dumps(record.to_storage())``, byte for byte, without ``dataclasses.asdict``:
    asdict deep-copies the whole record (transcript included) only for it to be
    encoded and dropped, which was the largest cost of a webhook's commit on a
    long call (profile in the commit message). With ``transcripts``, the
    transcript's JSON is extended rather than rebuilt."""
    if transcripts is None:
        return json.dumps(_shallow(record), allow_nan=False, separators=(",", ":"), default=_shallow)
    fields = _shallow(record)
    fields["transcript"] = _TRANSCRIPT_MARK
    text = json.dumps(fields, allow_nan=False, separators=(",", ":"), default=_shallow)
    lines = transcripts.encode(record.call_id, record.transcript, keep=not record.terminal)
    return text.replace(_TRANSCRIPT_MARK_JSON, lines, 1)


class Store:
    """The runtime's store. Create with ``await Store.open(directory)``."""

    def __init__(self, directory: Path, write_conn: sqlite3.Connection):
        self.directory = directory
        self.path = directory / DB_NAME
        self.stats = StoreStats()
        self._queue: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._write_conn = write_conn
        self._last_updated = 0.0
        self._transcripts = TranscriptJson()
        self._seqs: dict[str, int] = {}        # call_id -> last event seq; writer thread only
        self._closed = False
        self._writer = threading.Thread(target=self._write_loop, name="voicecall-store-writer",
                                        daemon=True)
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="voicecall-store-reader")
        self._read_conn: sqlite3.Connection | None = None
        self._writer.start()

    @classmethod
    async def open(cls, directory: Path) -> Store:
        directory = Path(directory)

        def prepare() -> sqlite3.Connection:
            secure_directory(directory)
            _secure_file(directory / DB_NAME)
            try:
                conn = _connect(directory / DB_NAME, check_same_thread=False)
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open call store {directory / DB_NAME}: {exc}") from exc
            try:
                migrate(conn)
            except sqlite3.Error as exc:
                conn.close()
                raise StoreError(f"cannot prepare call store {directory / DB_NAME}: {exc}") from exc
            except BaseException:
                conn.close()
                raise
            return conn

        # The write connection is created off the loop, then handed to the writer
        # thread (check_same_thread=False; only that thread touches it afterwards).
        conn = await asyncio.to_thread(prepare)
        return cls(directory, conn)

    # ---- writes -----------------------------------------------------------------

    async def _write(self, fn: Callable[[sqlite3.Connection, float], T]) -> T:
        if self._closed:
            raise StoreError(f"store {self.path} is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._queue.put((fn, fut, loop))
        return await fut

    async def commit(self, record: CallRecord | None, events: Sequence[Mapping[str, Any]] = (),
                     replay_key: str | None = None, audit: Mapping[str, Any] | None = None) -> None:
        """Write the record, its new events, the replay key and an audit row in ONE
        transaction. Serialises now, so later changes to ``record`` are not written."""
        if events and record is None:
            raise StoreError("events need the record they belong to")
        rec_json = record_json(record, self._transcripts) if record is not None else None
        if any("at" not in e or "type" not in e for e in events):
            raise StoreError("every event needs 'at' and 'type' (and optional 'data')")
        if audit is not None and "kind" not in audit:
            raise StoreError("an audit row needs a 'kind'")
        ev_rows = [(float(e["at"]), e["type"], _dumps(e.get("data", {}))) for e in events]
        audit_row = None
        if audit is not None:
            audit_row = (float(audit.get("at", time.time())), audit["kind"],
                         _dumps(audit.get("data", {})))

        # The columns are taken now too, like the JSON: the writer thread runs later.
        columns = None if record is None else (
            record.call_id, record.provider, record.provider_call_id, record.state,
            int(record.terminal), record.started_at)
        seqs = self._seqs

        def write(conn: sqlite3.Connection, now: float) -> None:
            if columns is not None:
                call_id = columns[0]
                conn.execute(
                    "INSERT INTO calls(call_id, provider, provider_call_id, state, terminal,"
                    " started_at, updated_at, record) VALUES (?,?,?,?,?,?,?,?)"
                    " ON CONFLICT(call_id) DO UPDATE SET provider=excluded.provider,"
                    " provider_call_id=excluded.provider_call_id, state=excluded.state,"
                    " terminal=excluded.terminal, started_at=excluded.started_at,"
                    " updated_at=excluded.updated_at, record=excluded.record",
                    (*columns, now, rec_json))
                if ev_rows:
                    # The writer thread is the only writer: the last seq it wrote
                    # for a call is the table's, unless a job failed (cache cleared).
                    last = seqs.get(call_id)
                    if last is None:
                        (last,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events WHERE call_id=?",
                                               (call_id,)).fetchone()
                    conn.executemany(
                        "INSERT INTO events(call_id, seq, at, type, data) VALUES (?,?,?,?,?)",
                        [(call_id, last + i, at, typ, data)
                         for i, (at, typ, data) in enumerate(ev_rows, start=1)])
                    if columns[4] or len(seqs) >= SEQ_CACHE_CALLS:
                        seqs.pop(call_id, None)
                    else:
                        seqs[call_id] = last + len(ev_rows)
            if replay_key is not None:
                # Idempotent: the runtime may already have claim()ed this key.
                conn.execute("INSERT OR IGNORE INTO replay(key, at) VALUES (?,?)", (replay_key, now))
            if audit_row is not None:
                conn.execute("INSERT INTO audit(at, kind, data) VALUES (?,?,?)", audit_row)

        await self._write(write)

    async def claim(self, replay_key: str, at: float) -> bool:
        """Insert the key atomically; False if it was already there (a replay)."""
        def write(conn: sqlite3.Connection, now: float) -> bool:
            cur = conn.execute("INSERT OR IGNORE INTO replay(key, at) VALUES (?,?)", (replay_key, at))
            return cur.rowcount == 1

        return await self._write(write)

    async def put_flow(self, hash: str, name: str, source: str) -> None:
        """Keep a flow's source by content hash, so a restored call runs the flow it began with."""
        def write(conn: sqlite3.Connection, now: float) -> None:
            conn.execute("INSERT OR IGNORE INTO flows(hash, name, source) VALUES (?,?,?)",
                         (hash, name, source))

        await self._write(write)

    async def prune_replay(self, older_than: float) -> int:
        def write(conn: sqlite3.Connection, now: float) -> int:
            return conn.execute("DELETE FROM replay WHERE at < ?", (older_than,)).rowcount

        return await self._write(write)

    def _write_loop(self) -> None:
        conn = self._write_conn
        stop = False
        while not stop:
            batch: list[_Job] = []
            item = self._queue.get()
            while True:
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)  # type: ignore[arg-type]
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._run_batch(conn, batch)
        conn.close()

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        # Monotonic updated_at lets `tail` page by it without missing a commit.
        now = self._last_updated = max(time.time(), self._last_updated)
        outcomes: list[tuple[bool, Any]] = []
        # A lone job needs no savepoint: its failure rolls back a transaction
        # that holds nothing else.
        alone = len(batch) == 1
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, _fut, _loop in batch:
                if not alone:
                    conn.execute("SAVEPOINT job")
                try:
                    result = fn(conn, now)
                except Exception as exc:  # reported to that caller alone
                    self._seqs.clear()
                    if alone:
                        conn.execute("ROLLBACK")
                        outcomes.append((False, exc))
                        break
                    conn.execute("ROLLBACK TO job")
                    outcomes.append((False, exc))
                else:
                    outcomes.append((True, result))
                if not alone:
                    conn.execute("RELEASE job")
            else:
                conn.execute("COMMIT")
                self.stats.transactions += 1
        except Exception as exc:
            self._seqs.clear()
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            err = StoreError(f"store write failed: {exc}")
            outcomes = [(False, err)] * len(batch)
        # One wake-up per event loop per transaction, not one per write: each
        # call_soon_threadsafe writes to the loop's self-pipe.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for (ok, value), (_fn, fut, loop) in zip(outcomes, batch, strict=True):
            if ok:
                self.stats.commits += 1
            else:
                self.stats.failed += 1
            by_loop.setdefault(loop, []).append((fut, ok, value))
        for loop, settled in by_loop.items():
            # RuntimeError: the caller's loop is gone; nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle_all, settled)

    # ---- reads ------------------------------------------------------------------

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StoreError(f"store {self.path} is closed")

        def run() -> T:
            if self._read_conn is None:
                self._read_conn = _connect(self.path, check_same_thread=True)
            return fn(self._read_conn)

        return await asyncio.get_running_loop().run_in_executor(self._reader, run)

    async def seen(self, replay_key: str) -> bool:
        return await self._read(lambda c: c.execute(
            "SELECT 1 FROM replay WHERE key=?", (replay_key,)).fetchone() is not None)

    async def replay_keys(self, sink: Callable[[str], None]) -> int:
        """Feed every stored replay key to ``sink`` on the reader thread (no list of
        millions of keys in memory); returns how many. ``sink`` must be thread-safe
        or unused elsewhere until this returns."""
        def feed(conn: sqlite3.Connection) -> int:
            n = 0
            for (key,) in conn.execute("SELECT key FROM replay"):
                sink(key)
                n += 1
            return n

        return await self._read(feed)

    async def get(self, call_id: str) -> CallRecord | None:
        return await self._read(lambda c: _one(c, "SELECT record FROM calls WHERE call_id=?",
                                               (call_id,)))

    async def find_provider_call(self, provider: str, provider_call_id: str) -> CallRecord | None:
        return await self._read(lambda c: _one(
            c, "SELECT record FROM calls WHERE provider=? AND provider_call_id=?"
               " ORDER BY started_at DESC LIMIT 1", (provider, provider_call_id)))

    async def live_calls(self) -> list[CallRecord]:
        return await self._read(lambda c: _many(
            c, "SELECT record FROM calls WHERE terminal=0 ORDER BY started_at", ()))

    async def recent_calls(self, limit: int = 50) -> list[CallRecord]:
        return await self._read(lambda c: _many(
            c, "SELECT record FROM calls ORDER BY started_at DESC LIMIT ?", (limit,)))

    async def events(self, call_id: str) -> list[dict[str, Any]]:
        return await self._read(lambda c: _events(c, call_id))

    async def get_flow(self, hash: str) -> tuple[str, str] | None:
        row = await self._read(lambda c: c.execute(
            "SELECT name, source FROM flows WHERE hash=?", (hash,)).fetchone())
        return (row[0], row[1]) if row else None

    async def audit_rows(self, kind: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT id, at, kind, data FROM audit"
        args: tuple[Any, ...] = ()
        if kind is not None:
            sql, args = sql + " WHERE kind=?", (kind,)
        rows = await self._read(lambda c: c.execute(sql + " ORDER BY id", args).fetchall())
        return [{"id": i, "at": at, "kind": k, "data": json.loads(d)} for i, at, k, d in rows]

    async def close(self) -> None:
        """Finish every queued write, then close both connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        await asyncio.to_thread(self._writer.join)

        def close_reader() -> None:
            if self._read_conn is not None:
                self._read_conn.close()
                self._read_conn = None

        await asyncio.get_running_loop().run_in_executor(self._reader, close_reader)
        self._reader.shutdown(wait=True)


def _settle_all(settled: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for fut, ok, value in settled:
        _settle(fut, ok, value)


def _settle(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.done():  # the caller was cancelled; the write still happened
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


def _one(conn: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> CallRecord | None:
    row = conn.execute(sql, args).fetchone()
    return CallRecord.from_storage(json.loads(row[0])) if row else None


def _many(conn: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> list[CallRecord]:
    return [CallRecord.from_storage(json.loads(r[0])) for r in conn.execute(sql, args)]


def _events(conn: sqlite3.Connection, call_id: str) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT seq, at, type, data FROM events WHERE call_id=? ORDER BY seq",
                        (call_id,))
    return [{"seq": s, "at": at, "type": t, "data": json.loads(d)} for s, at, t, d in rows]


class StoreReader:
    """Synchronous read-only view for ``status``, ``tail`` and ``latency``; safe
    while a runtime writes (WAL readers never block the writer)."""

    def __init__(self, directory: Path):
        self.path = Path(directory) / DB_NAME
        if not self.path.is_file():
            raise StoreError(f"no call store at {Path(directory)} (missing {DB_NAME}); "
                             "calls are recorded there once `voicecall serve` or `call` has run "
                             "with this store directory")
        try:
            self._conn = sqlite3.connect(self.path.resolve().as_uri() + "?mode=ro", uri=True)
            (version,) = self._conn.execute("PRAGMA user_version").fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read call store {self.path}: {exc}") from exc
        if version == 0:
            self._conn.close()
            raise StoreError(f"{self.path} is not a voicecall store (no schema)")

    def get(self, call_id: str) -> CallRecord | None:
        return _one(self._conn, "SELECT record FROM calls WHERE call_id=?", (call_id,))

    def calls(self, active_only: bool = False, limit: int = 100) -> list[CallRecord]:
        where = " WHERE terminal=0" if active_only else ""
        return _many(self._conn, f"SELECT record FROM calls{where} ORDER BY started_at DESC LIMIT ?",
                     (limit,))

    def changed_since(self, updated_after: float) -> list[CallRecord]:
        """Records committed after ``updated_after``, oldest change first."""
        return self.changes(updated_after)[0]

    def changes(self, updated_after: float) -> tuple[list[CallRecord], float]:
        """Like ``changed_since`` plus the mark to pass next time (one snapshot, so
        ``tail`` never skips a commit between two polls)."""
        rows = self._conn.execute(
            "SELECT record, updated_at FROM calls WHERE updated_at > ? ORDER BY updated_at",
            (updated_after,)).fetchall()
        mark = max((r[1] for r in rows), default=updated_after)
        return [CallRecord.from_storage(json.loads(r[0])) for r in rows], mark

    def events(self, call_id: str) -> list[dict[str, Any]]:
        return _events(self._conn, call_id)

    def close(self) -> None:
        self._conn.close()


class RuntimeLock:
    """``<store>/runtime.lock`` held with ``flock``: one runtime per store. The
    kernel drops the lock if the process dies, so a stale file never blocks."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def acquire_runtime_lock(directory: Path) -> RuntimeLock:
    """Take the store's runtime lock or raise ``StoreLocked`` naming the holder."""
    directory = Path(directory)
    secure_directory(directory)
    path = directory / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").split()
        os.close(fd)
        who = f" (pid {holder[0]} on {holder[1]}, started {holder[2]})" if len(holder) >= 3 else ""
        raise StoreLocked(f"another runtime{who} holds {path}") from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {socket.gethostname()} {iso(time.time())}\n".encode(), 0)
    return RuntimeLock(path, fd)
