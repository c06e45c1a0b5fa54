"""Steps → Telnyx Call Control commands, each body rendered from a JSON
template in ``templates/`` (STYLE §8: the carrier's wire format lives in
templates, code only prepares plain values).

A template is Jinja with every value written through ``tojson``, so no text
(a caller's words, a flow's message) can break out of its string. Fields
rendered as ``null`` are dropped: Telnyx treats a missing field as its
default, and some refuse an explicit null. ``command_id`` is not here: the
client adds one per request (and keeps it across retries).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from voicecall.engine.errors import RenderError
from voicecall.engine.program import Step
from voicecall.providers.common import prompt_steps
from voicecall.providers.telnyx.parse import KIND_GATHER, KIND_PLAYBACK, KIND_PROMPT, encode_state

DEFAULT_VOICE = "AWS.Polly.Joanna-Neural"
DEFAULT_LANGUAGE = "en-US"
# OpenAI TTS voice names → comparable Telnyx (Amazon Polly neural) voices (DESIGN §2).
OPENAI_TO_TELNYX: Mapping[str, str] = {
    "alloy": "AWS.Polly.Joanna-Neural",
    "echo": "AWS.Polly.Matthew-Neural",
    "fable": "AWS.Polly.Amy-Neural",
    "onyx": "AWS.Polly.Brian-Neural",
    "nova": "AWS.Polly.Salli-Neural",
    "shimmer": "AWS.Polly.Kimberly-Neural",
}
NATIVE_PREFIXES = ("AWS.Polly.", "Azure.", "ElevenLabs.", "Telnyx.", "Google.")
GATHER_INPUTS: Mapping[str, frozenset[str]] = {
    "speech": frozenset({"speech"}), "dtmf": frozenset({"dtmf"}), "both": frozenset({"speech", "dtmf"}),
    "speech dtmf": frozenset({"speech", "dtmf"}), "dtmf speech": frozenset({"speech", "dtmf"}),
}
VALID_DIGITS = "0123456789*#"
MAX_DIGITS = 128                     # Telnyx gather maximum_digits upper bound
DEFAULT_GATHER_TIMEOUT_S = 5
_DIGITS = re.compile(r"^[0-9*#A-DwW]{1,64}$")
REJECT_CAUSES: Mapping[str, str] = {"busy": "USER_BUSY"}


@dataclass(frozen=True, slots=True)
class Command:
    """One Call Control action: ``POST /v2/calls/{id}/actions/{name}`` with ``body``.
    ``then_wait``: the next command waits until this one's playback ended (a prompt)."""

    name: str
    body: Mapping[str, Any]
    then_wait: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"command": self.name, "body": dict(self.body)}


@lru_cache(maxsize=1)
def _env() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("voicecall.providers.telnyx", "templates"),
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False,
    )


def render_body(name: str, **values: Any) -> dict[str, Any]:
    """The JSON body of command ``name`` (``templates/<name>.json``), nulls dropped."""
    text = _env().get_template(f"{name}.json").render(**values)
    body = json.loads(text)
    return {k: v for k, v in body.items() if v is not None}


def native_voice(requested: Any, configured: str | None = None) -> str:
    """A step's voice, else the configured TTS voice, as a Telnyx ``voice``: Telnyx
    names pass through, ``Polly.X`` becomes ``AWS.Polly.X``, OpenAI names are mapped,
    ``male``/``female`` (Telnyx's basic voices) pass through; else the default."""
    for name in (requested, configured):
        if not name:
            continue
        text = str(name)
        if text.startswith(NATIVE_PREFIXES) or text in ("male", "female"):
            return text
        if text.startswith("Polly."):
            return "AWS." + text
        if text.lower() in OPENAI_TO_TELNYX:
            return OPENAI_TO_TELNYX[text.lower()]
    return DEFAULT_VOICE


def dial_body(*, connection_id: str, to: str, from_: str, webhook_url: str, client_state: str,
              timeout_secs: int, time_limit_secs: int | None, machine_detection: bool) -> dict[str, Any]:
    return render_body("dial", connection_id=connection_id, to=to, from_=from_, webhook_url=webhook_url,
                       client_state=client_state, timeout_secs=timeout_secs, time_limit_secs=time_limit_secs,
                       machine_detection=machine_detection)


def step_commands(step: Step, call_id: str, tag: str, voice: str | None = None) -> list[Command]:
    """The commands for one step, in order. ``tag`` goes into ``client_state`` so
    ``call.speak.ended`` / ``call.playback.ended`` come back as ``playback.done``
    with it; a gather's results carry the step's turn token instead."""
    p, kind = step.params, step.kind
    if kind == "say":
        return [_speak(p, call_id, tag, KIND_PLAYBACK, voice)]
    if kind == "play":
        return [_play(p, call_id, tag, KIND_PLAYBACK)]
    if kind == "gather":
        return _gather(p, call_id, voice)
    if kind == "hangup":
        return [Command("hangup", render_body("hangup", client_state=encode_state(call_id, tag)))]
    if kind == "reject":
        cause = REJECT_CAUSES.get(str(p.get("reason") or ""), "CALL_REJECTED")
        return [Command("reject", render_body("reject", cause=cause, client_state=encode_state(call_id, tag)))]
    if kind == "dtmf":
        digits = str(p.get("digits") or "")
        if not _DIGITS.match(digits):
            raise RenderError(f"dtmf digits {digits[:70]!r} are not 0-9 * # A-D w W (1-64 of them)")
        return [Command("send_dtmf", render_body("send_dtmf", digits=digits, client_state=encode_state(call_id, tag)))]
    if kind == "keepalive":
        return []            # a command call never runs out of document
    if kind == "pause":
        raise RenderError("pause is an engine timer on Telnyx, not a command")
    raise RenderError(f"step {kind!r} cannot be sent to Telnyx (capabilities: say, play, pause, gather, "
                      "dtmf, hangup, reject)")


def _speak(p: Mapping[str, Any], call_id: str, tag: str, kind: str, voice: str | None) -> Command:
    return Command("speak", render_body(
        "speak", text=_text(p.get("text"), "say"), voice=native_voice(p.get("voice"), voice),
        language=str(p.get("language") or DEFAULT_LANGUAGE), client_state=encode_state(call_id, tag, kind)))


def _play(p: Mapping[str, Any], call_id: str, tag: str, kind: str) -> Command:
    loop = _int(p.get("loop", 1), "play loop")
    return Command("playback_start", render_body(
        "playback_start", url=_text(p.get("url"), "play"), loop="infinity" if loop == 0 else loop,
        client_state=encode_state(call_id, tag, kind)))


def _gather(p: Mapping[str, Any], call_id: str, voice: str | None) -> list[Command]:
    raw = str(p.get("input") or "speech")
    inputs = GATHER_INPUTS.get(raw)
    if inputs is None:
        raise RenderError(f"gather input {raw!r} is not speech, dtmf or both")
    token = str(p.get("token") or "")
    prompt = [s for s in prompt_steps(p.get("prompt") or ()) if s.kind != "pause"]
    for s in prompt:
        if s.kind not in ("say", "play"):
            raise RenderError(f"a gather prompt holds say, play or pause, not {s.kind!r}")
    state = encode_state(call_id, token, KIND_GATHER)
    commands: list[Command] = []
    timeout_s = _int(p.get("timeout", DEFAULT_GATHER_TIMEOUT_S), "gather timeout")
    num = p.get("numDigits")
    digits = {
        "minimum_digits": 1,
        "maximum_digits": min(MAX_DIGITS, _int(num, "gather numDigits")) if num not in (None, "") else MAX_DIGITS,
        "timeout_millis": max(1, timeout_s) * 1000,
        "terminating_digit": str(p.get("finishOnKey") or "#"),
        "valid_digits": VALID_DIGITS,
        "client_state": state,
    }
    if inputs == {"dtmf"}:
        says = [s for s in prompt if s.kind == "say"]
        if prompt and len(says) == len(prompt):
            # One spoken prompt: Telnyx speaks it, then its digit time-out starts.
            text = " ".join(_text(s.params.get("text"), "say") for s in says)
            first = says[0].params
            return [Command("gather_using_speak", render_body(
                "gather_using_speak", text=text, voice=native_voice(first.get("voice"), voice),
                language=str(first.get("language") or p.get("language") or DEFAULT_LANGUAGE), **digits))]
        if len(prompt) == 1:
            return [Command("gather_using_audio", render_body(
                "gather_using_audio", url=_text(prompt[0].params.get("url"), "play"), **digits))]
        if prompt:
            raise RenderError("a Telnyx DTMF gather prompts with say steps or one play, not a mix")
        return [Command("gather", render_body("gather", **digits))]
    # Speech (or speech and digits): Telnyx transcribes from the moment it is told to,
    # so the prompt is spoken first and listening starts when it has ended.
    for index, s in enumerate(prompt):
        command = (_speak(s.params, call_id, token, KIND_PROMPT, voice) if s.kind == "say"
                   else _play(s.params, call_id, token, KIND_PROMPT))
        commands.append(Command(command.name, command.body, then_wait=index == len(prompt) - 1))
    if "dtmf" in inputs:
        commands.append(Command("gather", render_body("gather", **digits)))
    language = str(p.get("language") or DEFAULT_LANGUAGE).split("-")[0]
    commands.append(Command("transcription_start", render_body(
        "transcription_start", language=language, client_state=state)))
    return commands




def _text(value: Any, what: str) -> str:
    if value is None or str(value) == "":
        raise RenderError(f"{what} needs a non-empty value")
    return str(value)


def _int(value: Any, what: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise RenderError(f"{what} expects a whole number, got {str(value)[:40]!r}") from None
