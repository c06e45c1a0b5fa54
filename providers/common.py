"""Pieces every carrier shares: voice mapping, parameter coercion for
templates, time-out clamping, keep-alive URLs and REST retries. A carrier
package keeps only what is its own (verbs, parameter names, limits)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from voicecall.engine.errors import ProviderError, RenderError
from voicecall.engine.program import Program, Step

log = logging.getLogger("voicecall.providers")
T = TypeVar("T")

# OpenAI TTS voice names → comparable Amazon Polly voices, which Twilio, Plivo
# and Telnyx all speak (DESIGN §2: the carrier's native voice until media streams exist).
OPENAI_TO_POLLY: Mapping[str, str] = {
    "alloy": "Polly.Joanna", "echo": "Polly.Matthew", "fable": "Polly.Amy",
    "onyx": "Polly.Brian", "nova": "Polly.Salli", "shimmer": "Polly.Kimberly",
}
RETRY_DELAYS = (0.25, 1.0)


def settings_voice(settings: Any) -> str | None:
    """The TTS voice named in config (seed shape ``tts.<vendor>`` or newer ``tts.providers.<vendor>``)."""
    vendor = settings.get("tts.provider") or "openai"
    for key in (f"tts.{vendor}.voice", f"tts.providers.{vendor}.voice",
                f"tts.providers.{vendor}.speakerVoice", f"tts.{vendor}.voiceId"):
        value = settings.get(key)
        if value:
            return str(value)
    return None


def prompt_steps(prompt: Sequence[Any]) -> list[Step]:
    """A gather's ``prompt``: Steps, or ``{kind: params}`` mappings as flows write them."""
    out: list[Step] = []
    for item in prompt:
        if isinstance(item, Step):
            out.append(item)
        elif isinstance(item, Mapping) and len(item) == 1:
            ((kind, params),) = item.items()
            out.append(Step(str(kind), params if isinstance(params, Mapping) else {"text": params}))
        else:
            raise RenderError(f"gather prompt item {item!r:.60} is not a step")
    return out


def text(value: Any, kind: str, state: str) -> str:
    if value is None or str(value) == "":
        raise RenderError(f"state {state!r}: {kind} needs a non-empty value")
    return str(value)


def opt(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def whole(value: Any, kind: str, state: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise RenderError(f"state {state!r}: {kind} expects a whole number, got {str(value)[:40]!r}") from None


def opt_whole(value: Any, kind: str, state: str) -> str | None:
    return None if value is None or value == "" else str(whole(value, kind, state))


def clamp(carrier: str, what: str, value: int, low: int, high: int) -> int:
    """``value`` within the carrier's range, with a warning (once per value) when it was not."""
    clamped = max(low, min(high, int(value)))
    if clamped != value:
        _warn_clamped(carrier, what, int(value), low, high)
    return clamped


@lru_cache(maxsize=64)
def _warn_clamped(carrier: str, what: str, value: int, low: int, high: int) -> None:
    # Once per value: the same flow renders the same gather on every turn.
    clamped = max(low, min(high, value))
    log.warning("%s %s s is outside %s's range %s..%s; using %s s", what, value, carrier, low, high, clamped)


def keepalive_for(req: Any) -> Program:
    """A harmless document for a request whose reply the carrier would execute:
    wait a second, then come back (an empty document would hang the call up)."""
    return Program("ack", (Step("pause", {"seconds": 1}), Step("redirect", {"url": resume_url(req.url)})))


def resume_url(url: str) -> str:
    """The request's own URL turned into a keep-alive ``type=resume`` (turn token dropped)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in ("type", "token")]
    query.append(("type", "resume"))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


@lru_cache(maxsize=8)
def xml_template(package: str, name: str = "response.xml") -> Any:
    """A carrier's XML template: autoescaped (STYLE §8), StrictUndefined, compiled once."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader(package, "templates"),
        autoescape=jinja2.select_autoescape(["xml"], default_for_string=True),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
    )
    return env.get_template(name)


async def retrying(once: Callable[[], Awaitable[T]], sleep: Callable[[float], Awaitable[None]]) -> T:
    """For requests whose repeat changes nothing: retryable failures (5xx, network) are tried again."""
    for delay in (*RETRY_DELAYS, None):
        try:
            return await once()
        except ProviderError as exc:
            if not exc.retryable or delay is None:
                raise
            log.warning("%s; retrying in %.2f s", exc, delay)
            await sleep(delay)
    raise AssertionError("unreachable")
