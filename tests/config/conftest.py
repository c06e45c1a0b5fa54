"""Config tests run with a clean environment: no ambient carrier secrets or
VOICECALL_* variables may change what a config means."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

ENV_VARS = (
    "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FROM_NUMBER", "TELNYX_API_KEY",
    "TELNYX_CONNECTION_ID", "TELNYX_PUBLIC_KEY", "PLIVO_AUTH_ID", "PLIVO_AUTH_TOKEN",
    "OPENAI_API_KEY", "ELEVENLABS_API_KEY", "NGROK_AUTHTOKEN", "VOICECALL_CONFIG",
    "VOICECALL_STATE_DIR",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
