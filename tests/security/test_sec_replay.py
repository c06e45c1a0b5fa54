"""Replay keys, the in-memory replay cache, and the mock carrier's signature."""

from __future__ import annotations

import hashlib
import hmac
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicecall.engine.errors import ConfigError, SignatureError
from voicecall.engine.security import (
    MOCK_SIGNATURE_HEADER,
    MOCK_SIGNATURE_HEADERS,
    MOCK_TIMESTAMP_HEADER,
    ReplayCache,
    load_or_create_mock_secret,
    mock_headers,
    replay_key,
    sign_mock,
    verify_mock,
)


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------ replay_key


def test_replay_key_is_namespaced_and_stable() -> None:
    key = replay_key("twilio", "abc")
    provider, _, digest = key.partition(":")
    assert provider == "twilio"
    assert digest == hashlib.sha256(b"abc").hexdigest()
    assert replay_key("twilio", "abc") == key
    assert replay_key("telnyx", "abc") != key
    assert replay_key("twilio", "abd") != key


@pytest.mark.parametrize(("provider", "verified"), [
    ("", "k"), ("Twilio", "k"), ("a:b", "k"), ("twilio", ""), ("x" * 40, "k"),
])
def test_replay_key_refuses_bad_input(provider: str, verified: str) -> None:
    with pytest.raises(ValueError):
        replay_key(provider, verified)


# ----------------------------------------------------------------- ReplayCache


def test_replay_cache_window() -> None:
    clock = FakeClock()
    cache = ReplayCache(window_s=600, clock=clock)
    assert cache.check_and_add("k1")
    assert not cache.check_and_add("k1")
    assert "k1" in cache
    clock.now += 599.9
    assert not cache.check_and_add("k1")        # a replay does not extend the window
    clock.now += 0.1                            # 600 s after first sight: expired
    assert "k1" not in cache
    assert cache.check_and_add("k1")
    assert not cache.check_and_add("k1")


def test_replay_cache_expiry_prunes() -> None:
    clock = FakeClock()
    cache = ReplayCache(window_s=10, clock=clock)
    for i in range(5):
        cache.add(f"k{i}")
        clock.now += 1
    assert len(cache) == 5
    clock.now += 5                              # k0 is 10 s old: gone; k1..k4 younger
    assert len(cache) == 4
    assert "k0" not in cache and "k1" in cache
    clock.now += 100
    assert len(cache) == 0


def test_replay_cache_is_bounded_oldest_first() -> None:
    clock = FakeClock()
    cache = ReplayCache(window_s=600, max_keys=3, clock=clock)
    for key in ("a", "b", "c", "d"):
        assert cache.check_and_add(key)
        clock.now += 1
    assert len(cache) == 3
    assert "a" not in cache                     # evicted; the store still catches it
    assert all(k in cache for k in ("b", "c", "d"))
    assert not cache.check_and_add("d")


def test_replay_cache_default_bound() -> None:
    cache = ReplayCache(clock=FakeClock())
    for i in range(10_001):
        cache.add(str(i))
    assert len(cache) == 10_000
    assert "0" not in cache and "1" in cache and "10000" in cache


def test_replay_cache_add_warms_and_is_idempotent() -> None:
    clock = FakeClock()
    cache = ReplayCache(window_s=600, clock=clock)
    cache.add("from-store")
    cache.add("from-store")
    assert len(cache) == 1
    assert not cache.check_and_add("from-store")
    assert 42 not in cache


def test_replay_cache_survives_a_clock_step_back() -> None:
    clock = FakeClock()
    cache = ReplayCache(window_s=10, clock=clock)
    cache.add("a")
    clock.now += 5
    cache.add("b")
    clock.now += 6                              # a expired, b live
    assert cache.check_and_add("a")
    clock.now -= 3                              # wall clock stepped back
    assert not cache.check_and_add("a")
    assert not cache.check_and_add("b")


def test_replay_cache_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        ReplayCache(window_s=0)
    with pytest.raises(ValueError):
        ReplayCache(max_keys=0)


# ----------------------------------------------------------- mock secret file


def test_mock_secret_is_created_private_and_reused(tmp_path: Path) -> None:
    store = tmp_path / "state" / "store"
    secret = load_or_create_mock_secret(store)
    assert len(secret) == 32
    path = store / "mock.secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.stat().st_mode) == 0o700
    assert path.read_text() == secret.hex() + "\n"
    assert load_or_create_mock_secret(store) == secret
    assert [p.name for p in store.iterdir()] == ["mock.secret"]      # no temp files left
    other = load_or_create_mock_secret(tmp_path / "other")
    assert other != secret


def test_mock_secret_loose_mode_is_tightened(tmp_path: Path) -> None:
    secret = load_or_create_mock_secret(tmp_path)
    path = tmp_path / "mock.secret"
    path.chmod(0o644)
    assert load_or_create_mock_secret(tmp_path) == secret
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("content", ["", "zz" * 32, "ab" * 16, "ab" * 33, "not hex at all"])
def test_mock_secret_corrupt_file(tmp_path: Path, content: str) -> None:
    (tmp_path / "mock.secret").write_text(content)
    (tmp_path / "mock.secret").chmod(0o600)
    with pytest.raises(ConfigError) as info:
        load_or_create_mock_secret(tmp_path)
    message = str(info.value)
    assert "mock.secret" in message and "delete the file" in message
    if content:
        assert content not in message


# ------------------------------------------------------------- mock signature

SECRET = bytes(range(32))
NOW = 1_800_000_000.0
BODY = b'{"event": {"type": "call.answered", "callId": "c1"}}'


def test_sign_mock_is_hmac_sha256_over_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET, b"1800000000." + BODY, hashlib.sha256).hexdigest()
    assert sign_mock(SECRET, "1800000000", BODY) == expected


def test_mock_round_trip() -> None:
    headers = mock_headers(SECRET, BODY, NOW)
    assert set(headers) == set(MOCK_SIGNATURE_HEADERS)
    assert headers[MOCK_TIMESTAMP_HEADER] == "1800000000"
    key = verify_mock(SECRET, headers, BODY, NOW + 10)
    assert len(key) == 64 and int(key, 16) >= 0
    assert verify_mock(SECRET, headers, BODY, NOW) == key            # same request, same key
    later = mock_headers(SECRET, BODY, NOW + 1)
    assert verify_mock(SECRET, later, BODY, NOW) != key              # a fresh send is new


@pytest.mark.parametrize("skew", [300, -300, 0])
def test_mock_timestamp_within_tolerance(skew: float) -> None:
    headers = mock_headers(SECRET, BODY, NOW)
    verify_mock(SECRET, headers, BODY, NOW + skew)


@pytest.mark.parametrize("skew", [301, -301, 86_400])
def test_mock_stale_timestamp(skew: float) -> None:
    headers = mock_headers(SECRET, BODY, NOW)
    with pytest.raises(SignatureError, match="stale"):
        verify_mock(SECRET, headers, BODY, NOW + skew)
    verify_mock(SECRET, headers, BODY, NOW + skew, tolerance_s=abs(skew))


def test_mock_forged() -> None:
    headers = mock_headers(bytes(32), BODY, NOW)
    with pytest.raises(SignatureError, match="does not match") as info:
        verify_mock(SECRET, headers, BODY, NOW)
    assert headers[MOCK_SIGNATURE_HEADER] not in str(info.value)
    good = mock_headers(SECRET, BODY, NOW)
    with pytest.raises(SignatureError, match="does not match"):
        verify_mock(SECRET, good, BODY + b" ", NOW)
    moved = {**good, MOCK_TIMESTAMP_HEADER: str(int(NOW) + 1)}     # re-dated, same signature
    with pytest.raises(SignatureError, match="does not match"):
        verify_mock(SECRET, moved, BODY, NOW)


@pytest.mark.parametrize("drop", [(MOCK_TIMESTAMP_HEADER,), (MOCK_SIGNATURE_HEADER,),
                                  MOCK_SIGNATURE_HEADERS])
def test_mock_missing_headers(drop: tuple[str, ...]) -> None:
    headers = {k: v for k, v in mock_headers(SECRET, BODY, NOW).items() if k not in drop}
    with pytest.raises(SignatureError, match="missing"):
        verify_mock(SECRET, headers, BODY, NOW)
    blank = {**mock_headers(SECRET, BODY, NOW), **dict.fromkeys(drop, "")}
    with pytest.raises(SignatureError, match="missing"):
        verify_mock(SECRET, blank, BODY, NOW)


@pytest.mark.parametrize("timestamp", ["1800000000.5", "-1800000000", "abc", " 1800000000",
                                       "1800000000\n", "1" * 13, "１８００"])
def test_mock_malformed_timestamp(timestamp: str) -> None:
    headers = {**mock_headers(SECRET, BODY, NOW), MOCK_TIMESTAMP_HEADER: timestamp}
    with pytest.raises(SignatureError, match="malformed mock timestamp"):
        verify_mock(SECRET, headers, BODY, NOW)


def test_mock_signature_must_be_exact_lowercase_hex() -> None:
    good = mock_headers(SECRET, BODY, NOW)
    sig = good[MOCK_SIGNATURE_HEADER]
    for bad in (sig.upper(), sig[:-1], sig + "0", " " + sig, "sha256=" + sig):
        with pytest.raises(SignatureError, match="malformed mock signature"):
            verify_mock(SECRET, {**good, MOCK_SIGNATURE_HEADER: bad}, BODY, NOW)


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=512),
       timestamp=st.integers(min_value=1_000_000_000, max_value=4_000_000_000),
       data=st.data())
def test_any_single_byte_change_of_body_fails(body: bytes, timestamp: int,
                                              data: st.DataObject) -> None:
    headers = mock_headers(SECRET, body, timestamp)
    verify_mock(SECRET, headers, body, timestamp)
    mutated = bytearray(body)
    if body and data.draw(st.booleans(), label="replace"):
        i = data.draw(st.integers(0, len(body) - 1), label="index")
        mutated[i] ^= data.draw(st.integers(1, 255), label="xor")
    else:
        i = data.draw(st.integers(0, len(body)), label="insert at")
        mutated.insert(i, data.draw(st.integers(0, 255), label="byte"))
    with pytest.raises(SignatureError):
        verify_mock(SECRET, headers, bytes(mutated), timestamp)


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=512),
       timestamp=st.integers(min_value=1_000_000_000, max_value=4_000_000_000),
       data=st.data())
def test_any_single_character_change_of_signature_fails(body: bytes, timestamp: int,
                                                        data: st.DataObject) -> None:
    headers = mock_headers(SECRET, body, timestamp)
    sig = headers[MOCK_SIGNATURE_HEADER]
    i = data.draw(st.integers(0, len(sig) - 1), label="index")
    new = data.draw(st.characters(codec="latin-1").filter(lambda c: c != sig[i]), label="char")
    forged = {**headers, MOCK_SIGNATURE_HEADER: sig[:i] + new + sig[i + 1:]}
    with pytest.raises(SignatureError):
        verify_mock(SECRET, forged, body, timestamp)
