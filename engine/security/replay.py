"""Replay protection: namespaced keys and the in-memory front of the store's
replay table; the mock carrier's HMAC-SHA256 signature."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path

from voicecall.engine.errors import ConfigError, Problem, SignatureError
from voicecall.engine.security.urls import constant_time_equals

log = logging.getLogger(__name__)


_PROVIDER_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def replay_key(provider: str, verified_key: str) -> str:
    """``<provider>:<sha256 hex>``: one namespace per carrier in the replay table."""
    if not _PROVIDER_NAME.fullmatch(provider):
        raise ValueError(f"bad provider name {provider!r}")
    if not verified_key:
        raise ValueError("empty verified key")
    return f"{provider}:{hashlib.sha256(verified_key.encode('utf-8')).hexdigest()}"


class ReplayCache:
    """In-memory front of the store's replay table: most replays are caught
    without a database round trip. Keys expire ``window_s`` after first sight;
    past ``max_keys`` the oldest go first (the store still holds them)."""

    def __init__(self, window_s: float = 600, max_keys: int = 10000,
                 clock: Callable[[], float] = time.time):
        if window_s <= 0 or max_keys <= 0:
            raise ValueError("window_s and max_keys must be positive")
        self.window_s = window_s
        self.max_keys = max_keys
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()   # key -> first seen, oldest first

    def _prune(self, now: float) -> None:
        while self._seen:
            key, at = next(iter(self._seen.items()))
            if now - at < self.window_s:
                break
            del self._seen[key]

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        at = self._seen.get(key)
        return at is not None and self._clock() - at < self.window_s

    def __len__(self) -> int:
        self._prune(self._clock())
        return len(self._seen)

    def add(self, key: str) -> None:
        now = self._clock()
        self._prune(now)
        if key in self:
            return
        self._seen.pop(key, None)        # expired but not yet pruned (clock stepped back)
        self._seen[key] = now
        while len(self._seen) > self.max_keys:
            self._seen.popitem(last=False)

    def check_and_add(self, key: str) -> bool:
        """True when the key is new (and now remembered), False for a replay."""
        if key in self:
            return False
        self.add(key)
        return True


class StoredKeys:
    """A Bloom filter over the replay keys in the store, so a fresh webhook
    does not need a store read to prove it is not an old replay.

    "Not here" is certain (a Bloom filter has no false negatives): the request
    is fresh. "Maybe here" (every stored key, plus about 0.1% of fresh ones at
    a million keys) sends the caller to the store, which decides. Keys are
    added when first accepted, before their commit: a key that never reaches
    the store only costs one store read later. Fixed size (``bits`` bits, 2 MiB
    by default); past a few million keys the filter fills and more requests
    fall through to the store, which stays correct, just slower.
    """

    HASHES = 7

    def __init__(self, bits: int = 1 << 24):
        if bits < 64 or bits & (bits - 1):
            raise ValueError("bits must be a power of two, at least 64")
        self._mask = bits - 1
        self._bits = bytearray(bits // 8)
        self.count = 0

    def _indexes(self, key: str) -> list[int]:
        # 7 slices of 32 bits from one SHA-256: independent enough for a filter.
        h = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest(), "big")
        return [(h >> (32 * i)) & self._mask for i in range(self.HASHES)]

    def add(self, key: str) -> None:
        bits = self._bits
        for i in self._indexes(key):
            bits[i >> 3] |= 1 << (i & 7)
        self.count += 1

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        bits = self._bits
        return all(bits[i >> 3] & (1 << (i & 7)) for i in self._indexes(key))


# ------------------------------------------------------ mock carrier signature

MOCK_SECRET_FILE = "mock.secret"
MOCK_TIMESTAMP_HEADER = "x-voicecall-timestamp"
MOCK_SIGNATURE_HEADER = "x-voicecall-signature"
MOCK_SIGNATURE_HEADERS = (MOCK_TIMESTAMP_HEADER, MOCK_SIGNATURE_HEADER)
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def load_or_create_mock_secret(store_dir: Path) -> bytes:
    """The mock carrier's 32-byte HMAC key, kept as hex in ``<store>/mock.secret``
    (file 0600, directory 0700 when we create it). Concurrent first runs agree:
    the file appears atomically and an existing one is never overwritten."""
    store_dir = Path(store_dir)
    if not store_dir.exists():
        store_dir.mkdir(parents=True, mode=0o700, exist_ok=True)
        os.chmod(store_dir, 0o700)
    path = store_dir / MOCK_SECRET_FILE
    if not path.exists():
        tmp = store_dir / f".{MOCK_SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(secrets.token_bytes(32).hex() + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)      # fails if another process won the race
        finally:
            tmp.unlink(missing_ok=True)
    if path.stat().st_mode & 0o077:
        log.warning("%s was readable by others; setting mode 0600", path)
        os.chmod(path, 0o600)
    text = path.read_text(encoding="ascii", errors="replace").strip()
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = b""
    if len(secret) != 32:
        raise ConfigError([Problem(str(path), None, "$",
                                   "not a mock secret (64 hex characters expected); "
                                   "delete the file to generate a new one")])
    return secret


def sign_mock(secret: bytes, timestamp: str, body: bytes) -> str:
    """Lowercase hex HMAC-SHA256 of ``timestamp + "." + body``."""
    return hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


def mock_headers(secret: bytes, body: bytes, now: float) -> dict[str, str]:
    """The two headers the mock carrier sends with ``body`` at time ``now``."""
    timestamp = str(int(now))
    return {MOCK_TIMESTAMP_HEADER: timestamp,
            MOCK_SIGNATURE_HEADER: sign_mock(secret, timestamp, body)}


def verify_mock(secret: bytes, headers: Mapping[str, str], body: bytes, now: float,
                tolerance_s: float = 300) -> str:
    """Check a mock-carrier request; return its replay key (sha256 hex of the
    timestamp and signature). Raises SignatureError on a missing, malformed,
    stale or forged signature; messages never echo the signature."""
    timestamp = headers.get(MOCK_TIMESTAMP_HEADER)
    signature = headers.get(MOCK_SIGNATURE_HEADER)
    if not timestamp or not signature:
        raise SignatureError(f"missing {MOCK_TIMESTAMP_HEADER} or {MOCK_SIGNATURE_HEADER}")
    if not _TIMESTAMP.fullmatch(timestamp):
        raise SignatureError("malformed mock timestamp (epoch seconds expected)")
    if abs(now - int(timestamp)) > tolerance_s:
        raise SignatureError(f"stale mock timestamp ({int(now) - int(timestamp)} s off, "
                             f"tolerance {tolerance_s:g} s)")
    # Exact lowercase hex only: accepting other spellings would let a changed
    # signature still verify.
    if not _HEX64.fullmatch(signature):
        raise SignatureError("malformed mock signature (64 lowercase hex characters expected)")
    if not constant_time_equals(sign_mock(secret, timestamp, body), signature):
        raise SignatureError("mock signature does not match")
    return hashlib.sha256(f"{timestamp}.{signature}".encode("ascii")).hexdigest()

