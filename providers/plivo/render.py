"""Programs → Plivo XML, through one autoescaping Jinja template (STYLE §8).

This module only prepares plain values (attribute strings, URLs, the native
voice); ``templates/response.xml`` writes the XML. The template is compiled
once, on first use. Rendering is pure: same program, same URLs, same bytes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from voicecall.engine.errors import RenderError
from voicecall.engine.program import Program, Step
from voicecall.providers.base import CallUrls
from voicecall.providers.common import (
    OPENAI_TO_POLLY,
    clamp,
    opt,
    opt_whole,
    prompt_steps,
    text,
    whole,
    xml_template,
)

log = logging.getLogger("voicecall.providers.plivo")

DEFAULT_VOICE = "WOMAN"
# OpenAI TTS voice names → Amazon Polly voices, which Plivo's <Speak> also takes
# (DESIGN §2: calls speak with the carrier's native voice until media streams exist).
GATHER_INPUTS: Mapping[str, str] = {
    "speech": "speech", "dtmf": "dtmf", "both": "dtmf speech",
    "speech dtmf": "dtmf speech", "dtmf speech": "dtmf speech",
}
EXECUTION_TIMEOUT = (5, 60)          # GetInput executionTimeout, seconds
END_TIMEOUT = (2, 10)                # digitEndTimeout / speechEndTimeout, or "auto"
DEFAULT_GATHER_TIMEOUT = 5           # what flows are written against (Twilio's default)
# <DTMF>: 0-9 * # and w (0.5 s) / W (1 s) waits.
_DIGITS = re.compile(r"^[0-9*#wW]{1,64}$")
_HEADER_WORD = re.compile(r"^[A-Za-z0-9]+$")
_REJECT_REASONS = frozenset({"rejected", "busy"})


def native_voice(requested: Any, settings_voice: str | None = None) -> str:
    """``Polly.*`` and ``WOMAN``/``MAN`` pass through, OpenAI names map, anything else is WOMAN."""
    for name in (requested, settings_voice):
        if not name:
            continue
        text = str(name)
        if text.startswith("Polly."):
            return text
        if text.upper() in ("WOMAN", "MAN"):
            return text.upper()
        if text.lower() in OPENAI_TO_POLLY:
            return OPENAI_TO_POLLY[text.lower()]
    return DEFAULT_VOICE


def render_xml(program: Program, urls: CallUrls, voice: str | None = None) -> str:
    """The Plivo XML document for ``program`` (``voice``: the configured TTS voice)."""
    verbs: list[dict[str, Any]] = []
    for step in program.steps:
        verbs.extend(_prepare(step, urls, voice, program.state))
    return str(xml_template("voicecall.providers.plivo").render(verbs=verbs))


def _prepare(step: Step, urls: CallUrls, voice: str | None, state: str) -> list[dict[str, Any]]:
    p = step.params
    kind = step.kind
    if kind == "say":
        return [{"kind": "speak", "text": text(p.get("text"), kind, state),
                 "voice": native_voice(p.get("voice"), voice), "language": opt(p.get("language"))}]
    if kind == "play":
        return [{"kind": "play", "url": text(p.get("url"), kind, state), "loop": opt_whole(p.get("loop"), kind, state)}]
    if kind == "pause":
        seconds = whole(p.get("seconds", 1), kind, state)
        return [{"kind": "wait", "length": str(seconds)}] if seconds > 0 else []
    if kind == "gather":
        return [_gather(p, urls, voice, state)]
    if kind == "hangup":
        return [{"kind": "hangup", "reason": None}]
    if kind == "reject":
        # DESIGN §8: a refused inbound call is hung up unanswered, never greeted.
        reason = str(p.get("reason") or "rejected")
        return [{"kind": "hangup", "reason": reason if reason in _REJECT_REASONS else "rejected"}]
    if kind == "dtmf":
        digits = str(p.get("digits") or "")
        if not _DIGITS.match(digits):
            raise RenderError(f"state {state!r}: dtmf digits {digits[:70]!r} are not 0-9 * # w W (1-64 of them)")
        return [{"kind": "dtmf", "digits": digits}]
    if kind == "redirect":
        return [{"kind": "redirect", "url": text(p.get("url"), kind, state)}]
    if kind == "keepalive":
        seconds = whole(p.get("seconds", 0), kind, state)
        wait = [{"kind": "wait", "length": str(seconds)}] if seconds > 0 else []
        return [*wait, {"kind": "redirect", "url": urls.webhook("resume")}]
    if kind == "stream":
        return [_stream(p, urls, state)]
    raise RenderError(f"state {state!r}: step {kind!r} cannot be sent to Plivo")


def _gather(p: Mapping[str, Any], urls: CallUrls, voice: str | None, state: str) -> dict[str, Any]:
    raw_input = str(p.get("input") or "speech")
    input_ = GATHER_INPUTS.get(raw_input)
    if input_ is None:
        raise RenderError(f"state {state!r}: gather input {raw_input!r} is not speech, dtmf or both")
    token = str(p["token"]) if p.get("token") else None
    prompt: list[dict[str, Any]] = []
    for child in prompt_steps(p.get("prompt") or ()):
        if child.kind not in ("say", "play", "pause"):
            raise RenderError(f"state {state!r}: a gather prompt holds say, play or pause, not {child.kind!r}")
        prompt.extend(_prepare(child, urls, voice, state))
    timeout = whole(p.get("timeout", DEFAULT_GATHER_TIMEOUT) or DEFAULT_GATHER_TIMEOUT, "gather", state)
    finish = p.get("finishOnKey")
    return {
        "kind": "getinput", "input": input_, "prompt": prompt,
        "action": urls.webhook("gather", token),
        "noinput": urls.webhook("noinput", token),
        "execution_timeout": str(clamp("Plivo", "gather timeout", timeout, *EXECUTION_TIMEOUT)),
        "digit_end_timeout": None,
        "speech_end_timeout": _end_timeout(p.get("speechTimeout"), state) if "speech" in input_ else None,
        # Plivo's default finishOnKey is '#'; an empty one is spelled "none".
        "finish_on_key": None if finish is None else (str(finish) or "none"),
        "num_digits": opt_whole(p.get("numDigits"), "gather", state),
        "language": opt(p.get("language")),
    }


def _end_timeout(value: Any, state: str) -> str | None:
    if value is None or value == "":
        return None
    if str(value) == "auto":
        return "auto"
    return str(clamp("Plivo", "speechTimeout", whole(value, "gather", state), *END_TIMEOUT))


def _stream(p: Mapping[str, Any], urls: CallUrls, state: str) -> dict[str, Any]:
    url = str(p.get("url") or urls.stream_url or "")
    if not url:
        raise RenderError(f"state {state!r}: stream needs a url and no stream URL is configured")
    parameters = p.get("parameters") or {}
    pairs = [(str(k), str(v)) for k, v in (parameters.items() if isinstance(parameters, Mapping) else parameters)]
    for name, value in pairs:
        # Plivo's extraHeaders: k=v pairs, alphanumeric only, at most 512 bytes in all.
        if not (_HEADER_WORD.match(name) and _HEADER_WORD.match(value)):
            raise RenderError(f"state {state!r}: stream parameter {name[:30]!r} must be alphanumeric "
                              "(name and value) to travel in Plivo extraHeaders")
    extra = ",".join(f"{k}={v}" for k, v in pairs)
    if len(extra) > 512:
        raise RenderError(f"state {state!r}: stream parameters exceed Plivo's 512-byte extraHeaders")
    return {"kind": "stream", "url": url, "extra_headers": extra}


