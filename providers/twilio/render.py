"""Programs → TwiML, through one autoescaping Jinja template (STYLE §8).

This module only prepares plain values (attribute strings, URLs, the native
voice); ``templates/response.xml`` writes the XML. The template is compiled
once, on first use. Rendering is pure: same program, same URLs, same bytes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from voicecall.engine.errors import RenderError
from voicecall.engine.program import Program, Step
from voicecall.providers.base import CallUrls
from voicecall.providers.common import (
    OPENAI_TO_POLLY,
    opt,
    opt_whole,
    prompt_steps,
    text,
    whole,
    xml_template,
)

DEFAULT_VOICE = "Polly.Joanna"
# OpenAI TTS voice names → comparable Twilio (Amazon Polly) voices (DESIGN §2):
# calls speak with the carrier's native voice until media streams exist.
GATHER_INPUTS: Mapping[str, str] = {
    "speech": "speech", "dtmf": "dtmf", "both": "dtmf speech",
    "speech dtmf": "dtmf speech", "dtmf speech": "dtmf speech",
}
# <Play digits>: 0-9, * and #, w = half-second wait (TwiML Play docs).
_DIGITS = re.compile(r"^[0-9*#wW]{1,64}$")
_REJECT_REASONS = frozenset({"rejected", "busy"})


def native_voice(requested: Any, settings_voice: str | None = None) -> str:
    """The Twilio voice for a step: its own ``voice``, else the configured TTS voice.

    ``Polly.*`` and ``Google.*`` (and Twilio's classic ``man``/``woman``/``alice``)
    pass through; OpenAI names are mapped; anything else gets the default.
    """
    for name in (requested, settings_voice):
        if not name:
            continue
        text = str(name)
        if text.startswith(("Polly.", "Google.")) or text in ("man", "woman", "alice"):
            return text
        if text.lower() in OPENAI_TO_POLLY:
            return OPENAI_TO_POLLY[text.lower()]
    return DEFAULT_VOICE


def render_twiml(program: Program, urls: CallUrls, voice: str | None = None) -> str:
    """The TwiML document for ``program`` (``voice``: the configured TTS voice)."""
    verbs: list[dict[str, Any]] = []
    for step in program.steps:
        verbs.extend(_prepare(step, urls, voice, program.state))
    return str(xml_template("voicecall.providers.twilio").render(verbs=verbs))


def _prepare(step: Step, urls: CallUrls, voice: str | None, state: str) -> list[dict[str, Any]]:
    p = step.params
    kind = step.kind
    if kind == "say":
        return [{"kind": "say", "text": text(p.get("text"), kind, state),
                 "voice": native_voice(p.get("voice"), voice), "language": opt(p.get("language"))}]
    if kind == "play":
        return [{"kind": "play", "url": text(p.get("url"), kind, state), "loop": opt_whole(p.get("loop"), kind, state)}]
    if kind == "pause":
        seconds = whole(p.get("seconds", 1), kind, state)
        return [{"kind": "pause", "length": str(seconds)}] if seconds > 0 else []
    if kind == "gather":
        return [_gather(p, urls, voice, state)]
    if kind == "hangup":
        return [{"kind": "hangup"}]
    if kind == "reject":
        reason = str(p.get("reason") or "rejected")
        return [{"kind": "reject", "reason": reason if reason in _REJECT_REASONS else "rejected"}]
    if kind == "dtmf":
        digits = str(p.get("digits") or "")
        if not _DIGITS.match(digits):
            raise RenderError(f"state {state!r}: dtmf digits {digits[:70]!r} are not 0-9 * # w (1-64 of them)")
        return [{"kind": "dtmf", "digits": digits}]
    if kind == "redirect":
        return [{"kind": "redirect", "url": text(p.get("url"), kind, state)}]
    if kind == "keepalive":
        seconds = whole(p.get("seconds", 0), kind, state)
        pause = [{"kind": "pause", "length": str(seconds)}] if seconds > 0 else []
        return [*pause, {"kind": "redirect", "url": urls.webhook("resume")}]
    if kind == "stream":
        url = str(p.get("url") or urls.stream_url or "")
        if not url:
            raise RenderError(f"state {state!r}: stream needs a url and no stream URL is configured")
        parameters = p.get("parameters") or {}
        pairs = parameters.items() if isinstance(parameters, Mapping) else parameters
        return [{"kind": "stream", "url": url, "parameters": [(str(k), str(v)) for k, v in pairs]}]
    raise RenderError(f"state {state!r}: step {kind!r} cannot be sent to Twilio")


def _gather(p: Mapping[str, Any], urls: CallUrls, voice: str | None, state: str) -> dict[str, Any]:
    raw_input = str(p.get("input") or "speech")
    input_ = GATHER_INPUTS.get(raw_input)
    if input_ is None:
        raise RenderError(f"state {state!r}: gather input {raw_input!r} is not speech, dtmf or both")
    token = p.get("token")
    prompt: list[dict[str, Any]] = []
    for child in prompt_steps(p.get("prompt") or ()):
        if child.kind not in ("say", "play", "pause"):
            raise RenderError(f"state {state!r}: a gather prompt holds say, play or pause, not {child.kind!r}")
        prompt.extend(_prepare(child, urls, voice, state))
    speech_timeout = p.get("speechTimeout")
    if speech_timeout is None and "speech" in input_:
        speech_timeout = "auto"
    return {
        "kind": "gather", "input": input_, "prompt": prompt,
        "action": urls.webhook("gather", str(token) if token else None),
        "noinput": urls.webhook("noinput", str(token) if token else None),
        "timeout": opt_whole(p.get("timeout"), "gather", state),
        "num_digits": opt_whole(p.get("numDigits"), "gather", state),
        "finish_on_key": opt(p.get("finishOnKey")),
        "language": opt(p.get("language")),
        "speech_timeout": opt(speech_timeout),
    }


