"""What the Telnyx emulator refuses, and how: request checks for dial and for
each call command, raising CommandRefused with Telnyx's error shape.

Codes: 10009 (authentication) and 90018 (call has already ended) are
Telnyx's; the others are [UNVERIFIED] stand-ins in Telnyx's numbering style.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from typing import Any

AUTH_FAILED = "10009"
INVALID = "10015"            # [UNVERIFIED] invalid parameter
NOT_FOUND = "10005"          # [UNVERIFIED] resource not found
CALL_ENDED = "90018"
NOT_ANSWERED = "90034"       # [UNVERIFIED] command needs an answered call
ALREADY_ANSWERED = "90019"   # [UNVERIFIED] answer/reject on a call that is not ringing inbound
E164 = re.compile(r"^\+[1-9]\d{1,14}$")
DTMF = re.compile(r"^[0-9*#A-DwW]{1,64}$")
AMD_MODES = frozenset({"premium", "premium_ios_call_screening_detection", "detect", "detect_beep",
                       "detect_words", "greeting_end", "disabled"})
ENGINES = frozenset({"Google", "Telnyx", "Deepgram", "Azure", "xAI", "AssemblyAI", "Speechmatics",
                     "Soniox", "Parakeet", "Humain", "Reson8", "Cohere", "A", "B"})
REJECT_CAUSES = frozenset({"CALL_REJECTED", "USER_BUSY"})


class CommandRefused(Exception):
    def __init__(self, status: int, code: str, title: str, detail: str, pointer: str | None = None):
        super().__init__(f"{status} {code} {title}: {detail}")
        self.status, self.code, self.title, self.detail, self.pointer = status, code, title, detail, pointer

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "title": self.title, "detail": self.detail}
        if self.pointer:
            error["source"] = {"pointer": self.pointer}
        return {"errors": [error]}


def invalid(field: str, detail: str) -> CommandRefused:
    return CommandRefused(422, INVALID, "Invalid parameter", detail, f"/{field}")


def _string(body: Mapping[str, Any], name: str, *, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise invalid(name, f"The '{name}' parameter is required and must be a non-empty string.")
    return value


def _int(body: Mapping[str, Any], name: str, low: int, high: int, default: int) -> int:
    value = body.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise invalid(name, f"The '{name}' parameter must be an integer between {low} and {high}.")
    return value


def _url(body: Mapping[str, Any], name: str) -> str:
    value = _string(body, name) or ""
    if not value.startswith(("http://", "https://")):
        raise invalid(name, f"The '{name}' parameter must be a valid http(s) URL.")
    return value


def check_client_state(body: Mapping[str, Any]) -> None:
    state = body.get("client_state")
    if state is None:
        return
    try:
        if not isinstance(state, str) or not state:
            raise ValueError
        base64.b64decode(state, validate=True)
    except (binascii.Error, ValueError):
        raise invalid("client_state", "The 'client_state' parameter must be a valid Base64 string.") from None
    if len(state) > 4096:
        raise invalid("client_state", "The 'client_state' parameter must be at most 4096 characters.")


def check_dial(body: Mapping[str, Any]) -> dict[str, Any]:
    _string(body, "connection_id")
    for name in ("to", "from"):
        if not E164.match(_string(body, name) or ""):
            raise invalid(name, f"The '{name}' parameter must be a phone number in E.164 format.")
    _url(body, "webhook_url")
    if body.get("webhook_url_method", "POST") != "POST":
        raise invalid("webhook_url_method", "This emulator posts webhooks with POST only.")
    check_client_state(body)
    amd = body.get("answering_machine_detection", "disabled")
    if amd not in AMD_MODES:
        raise invalid("answering_machine_detection", f"Unknown answering_machine_detection {amd!r}.")
    return {
        "timeout_secs": _int(body, "timeout_secs", 5, 600, 30),
        "time_limit_secs": _int(body, "time_limit_secs", 30, 14400, 14400),
        "amd": amd != "disabled",
    }


def _digits(body: Mapping[str, Any]) -> None:
    low = _int(body, "minimum_digits", 1, 128, 1)
    high = _int(body, "maximum_digits", 1, 128, 128)
    if low > high:
        raise invalid("minimum_digits", "minimum_digits must not exceed maximum_digits.")
    _int(body, "timeout_millis", 1, 3_600_000, 60_000)
    end = body.get("terminating_digit", "#")
    if not isinstance(end, str) or len(end) != 1 or end not in "0123456789*#":
        raise invalid("terminating_digit", "terminating_digit must be one of 0-9, * or #.")


def _speak(body: Mapping[str, Any]) -> None:
    _string(body, "payload")
    _string(body, "voice")
    if body.get("payload_type", "text") not in ("text", "ssml"):
        raise invalid("payload_type", "payload_type must be text or ssml.")


def _gather_using_speak(body: Mapping[str, Any]) -> None:
    _speak(body)
    _digits(body)


def _gather_using_audio(body: Mapping[str, Any]) -> None:
    _url(body, "audio_url")
    _digits(body)


def _transcription(body: Mapping[str, Any]) -> None:
    if body.get("transcription_engine", "Google") not in ENGINES:
        raise invalid("transcription_engine", f"Unknown transcription_engine {body.get('transcription_engine')!r}.")
    if body.get("transcription_tracks", "inbound") not in ("inbound", "outbound", "both"):
        raise invalid("transcription_tracks", "transcription_tracks must be inbound, outbound or both.")


def _send_dtmf(body: Mapping[str, Any]) -> None:
    if not DTMF.match(_string(body, "digits") or ""):
        raise invalid("digits", "digits may hold only 0-9, *, #, A-D, w and W (at most 64).")


def _reject(body: Mapping[str, Any]) -> None:
    if body.get("cause") not in REJECT_CAUSES:
        raise invalid("cause", "cause must be CALL_REJECTED or USER_BUSY.")


def _playback(body: Mapping[str, Any]) -> None:
    _url(body, "audio_url")


def _none(body: Mapping[str, Any]) -> None:
    return None


# name → (body check, the call states it is accepted in)
COMMANDS: Mapping[str, tuple[Callable[[Mapping[str, Any]], None], frozenset[str]]] = {
    "answer": (_none, frozenset({"ringing"})),
    "reject": (_reject, frozenset({"ringing"})),
    "hangup": (_none, frozenset({"ringing", "answered"})),
    "speak": (_speak, frozenset({"answered"})),
    "playback_start": (_playback, frozenset({"answered"})),
    "gather_using_speak": (_gather_using_speak, frozenset({"answered"})),
    "gather_using_audio": (_gather_using_audio, frozenset({"answered"})),
    "gather": (_digits, frozenset({"answered"})),
    "gather_stop": (_none, frozenset({"answered"})),
    "transcription_start": (_transcription, frozenset({"answered"})),
    "transcription_stop": (_none, frozenset({"answered"})),
    "send_dtmf": (_send_dtmf, frozenset({"answered"})),
}


def check_command(name: str, body: Mapping[str, Any], state: str, direction: str) -> None:
    """Raise CommandRefused unless Telnyx would run ``name`` on a call in ``state``."""
    if name not in COMMANDS:
        raise CommandRefused(404, NOT_FOUND, "Resource not found", f"Unknown call command '{name}'.")
    check, states = COMMANDS[name]
    if state == "ended":
        raise CommandRefused(422, CALL_ENDED, "Call has already ended",
                             "This call is no longer active and can't receive commands.")
    if name in ("answer", "reject") and direction != "incoming":
        raise CommandRefused(422, ALREADY_ANSWERED, "Invalid call state",
                             f"'{name}' applies to incoming calls only.")
    if state not in states:
        if state == "ringing":
            raise CommandRefused(422, NOT_ANSWERED, "Call not answered yet",
                                 f"The call must be answered before '{name}' can run.")
        raise CommandRefused(422, ALREADY_ANSWERED, "Invalid call state", f"The call is already {state}.")
    check_client_state(body)
    check(body)
