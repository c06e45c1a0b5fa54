"""Responders: who writes the bot's next line for the flow action ``reply``.

``OpenAIResponder`` asks a chat-completions model (the official client, imported
lazily) and pulls the spoken line out of whatever it returns; ``OfflineResponder``
is a deterministic stand-in for the mock carrier and the demo. Model output is
data: it is spoken literally, never rendered as a template (DESIGN §3).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from .errors import VoiceCallError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gpt-4o-mini"


class ResponderError(VoiceCallError):
    """The responder failed, timed out, or produced nothing speakable."""

    code = "responder_error"


@dataclass(frozen=True)
class Turn:
    role: Literal["bot", "caller"]
    text: str


@dataclass(frozen=True)
class ReplyRequest:
    call_id: str
    from_number: str
    to_number: str
    direction: str
    transcript: Sequence[Turn]
    system_prompt: str | None = None
    model: str | None = None
    agent_id: str | None = None
    session_key: str | None = None

    @property
    def caller_number(self) -> str:
        """The far party: the caller inbound, the callee outbound."""
        return self.from_number if self.direction == "inbound" else self.to_number


class Responder(Protocol):
    async def reply(self, req: ReplyRequest) -> str:
        """The line to speak ('' means stay silent); raises ResponderError."""
        ...

    async def close(self) -> None: ...


# ---- prompting ----------------------------------------------------------------

# After openclaw's response-generator default (openclaw-behaviour.md §3.6),
# minus the tools sentence: this responder has none.
DEFAULT_SYSTEM_PROMPT = (
    "You are {name}, a helpful voice assistant on a phone call. Keep responses brief and "
    "conversational (1-2 sentences max). Be natural and friendly. "
    "The caller's phone number is {caller}."
)

SPOKEN_CONTRACT = (
    "Your reply is converted to speech and played to the caller. Answer with only a JSON "
    'object of the form {"spoken": "<exactly what to say>"}: no reasoning, no markdown, '
    'nothing outside the JSON. Use {"spoken": ""} to stay silent.'
)


def build_messages(req: ReplyRequest, system_prompt: str | None = None) -> list[dict[str, str]]:
    """System prompt + spoken-output contract, then the transcript as chat turns."""
    prompt = req.system_prompt or system_prompt or DEFAULT_SYSTEM_PROMPT.format(
        name=req.agent_id or "the assistant", caller=req.caller_number)
    messages = [{"role": "system", "content": f"{prompt}\n\n{SPOKEN_CONTRACT}"}]
    for turn in req.transcript:
        messages.append({"role": "assistant" if turn.role == "bot" else "user",
                         "content": turn.text})
    return messages


def model_name(model: str) -> str:
    """``openai/gpt-4o-mini`` → ``gpt-4o-mini``; other ``vendor/model`` names are
    left whole for an OpenAI-compatible ``response.baseUrl`` to interpret."""
    return model.removeprefix("openai/")


# ---- extraction ---------------------------------------------------------------

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_-]*)[ \t]*\n?(.*?)```", re.S)
_INLINE = re.compile(r'"spoken"\s*:\s*"((?:[^"\\]|\\.)*)"', re.S)
_THINK = re.compile(r"<(think|thinking|reasoning|analysis)>.*?(</\1>|$)", re.S | re.I)
_META_PARAGRAPH = re.compile(
    r"^\s*(?:\*\*)?(?:thinking(?: process)?|reasoning|analysis|thoughts?|plan|internal)\b"
    r"|^\s*(?:the )?user\b.*\b(?:i should|i need to|i will|i'll|i must|i want to|let me)\b",
    re.I | re.S)
_REASONING_KEYS = ("reasoning", "thinking", "analysis", "thought", "thoughts")
_TEXT_KEYS = ("text", "reply", "response", "answer", "message")


def extract_spoken(raw: str) -> str:
    """The line to speak from a model's raw output.

    Tries, in order: the whole text as JSON, fenced JSON blocks, the slice from
    the first ``{`` to the last ``}``, an inline ``"spoken": "..."``; else plain
    text minus code fences and leading planning paragraphs. Error payloads and
    reasoning-only output raise ``ResponderError``: they are never spoken.
    ``{"spoken": ""}`` gives ``""`` (silence).
    """
    text = _THINK.sub("", raw).strip()
    if not text:
        return ""
    whole = [text] + [m.group(2) for m in _FENCE.finditer(text)
                      if m.group(1).lower() in ("", "json", "json5")]
    for candidate in whole:
        obj = _loads(candidate)
        if isinstance(obj, dict):
            # A reply that IS a JSON object either says something or is not speech.
            return _clean(_from_payload(obj, strict=True) or "")
    first, last = text.find("{"), text.rfind("}")
    if 0 <= first < last:
        obj = _loads(text[first:last + 1])
        if isinstance(obj, dict):
            found = _from_payload(obj, strict=False)
            if found is not None:
                return _clean(found)
    inline = _INLINE.search(text)
    if inline:
        decoded = _loads(f'"{inline.group(1)}"')
        return _clean(decoded if isinstance(decoded, str) else inline.group(1))
    return _clean(_plain(text))


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _from_payload(obj: Mapping[str, Any], *, strict: bool) -> str | None:
    """The spoken text of a JSON object; in strict mode anything else raises."""
    if "spoken" in obj:
        value = obj["spoken"]
        if value is None:
            return ""
        if isinstance(value, str):
            return value
        raise ResponderError(f"responder returned a non-text 'spoken' ({type(value).__name__})")
    if not strict:
        return None
    if "error" in obj:
        err = obj["error"]
        detail = err.get("message") if isinstance(err, Mapping) else err
        raise ResponderError(f"responder returned an error payload: {str(detail)[:200]}")
    for key in _TEXT_KEYS:
        if isinstance(obj.get(key), str):
            return obj[key]
    if any(k in obj for k in _REASONING_KEYS):
        raise ResponderError("responder returned reasoning but no spoken line")
    raise ResponderError(f"responder returned JSON without 'spoken' (keys: {sorted(obj)[:8]})")


def _plain(text: str) -> str:
    text = _FENCE.sub(lambda m: m.group(2), text).replace("```", "")
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    while paragraphs and _META_PARAGRAPH.match(paragraphs[0]):
        paragraphs.pop(0)
    if not paragraphs:
        raise ResponderError("responder returned only reasoning, nothing to say")
    return " ".join(paragraphs)


def _clean(spoken: str) -> str:
    spoken = " ".join(spoken.split())
    if len(spoken) >= 2 and spoken[0] == spoken[-1] == '"':
        spoken = spoken[1:-1].strip()
    # The contract's key is never speech, whatever the model nested inside it.
    while '"spoken"' in spoken:
        spoken = spoken.replace('"spoken"', "spoken")
    return spoken


# ---- responders ---------------------------------------------------------------

class OpenAIResponder:
    """Chat completions through ``openai.AsyncOpenAI`` (any OpenAI-compatible
    ``base_url``). The whole reply, retries included, is bounded by ``timeout_s``."""

    def __init__(self, *, api_key: str, model: str = DEFAULT_MODEL, base_url: str | None = None,
                 timeout_s: float = 30.0, system_prompt: str | None = None,
                 max_retries: int = 2):
        if not api_key:
            raise ResponderError("the OpenAI responder needs an API key (response.apiKey)")
        if timeout_s <= 0:
            raise ResponderError(f"responder timeout must be positive, got {timeout_s}")
        self.model = model
        self.base_url = base_url
        self.timeout_s = timeout_s
        self.system_prompt = system_prompt
        self._api_key = api_key
        self._max_retries = max_retries
        self._client: Any = None

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIResponder(model={self.model!r}, base_url={self.base_url!r})"

    def _get_client(self) -> Any:
        if self._client is None:
            from openai import AsyncOpenAI

            self._client = AsyncOpenAI(api_key=self._api_key, base_url=self.base_url,
                                       timeout=self.timeout_s, max_retries=self._max_retries)
        return self._client

    async def reply(self, req: ReplyRequest) -> str:
        import openai

        model = model_name(req.model or self.model)
        messages = build_messages(req, self.system_prompt)
        try:
            async with asyncio.timeout(self.timeout_s):
                completion = await self._get_client().chat.completions.create(
                    model=model, messages=messages)
        except (TimeoutError, openai.APITimeoutError):
            raise ResponderError(
                f"responder timed out after {self.timeout_s:g}s (model {model})") from None
        except openai.APIStatusError as exc:
            # Only status and error code: an auth error's message echoes part of the key.
            body = exc.body if isinstance(exc.body, Mapping) else {}
            slug = body.get("code") or body.get("type") or type(exc).__name__
            raise ResponderError(
                f"responder request failed: HTTP {exc.status_code} ({slug}), model {model}") from None
        except openai.APIError as exc:
            raise ResponderError(
                f"responder request failed: {type(exc).__name__}, model {model}") from None
        if not completion.choices:
            raise ResponderError(f"responder returned no choices (model {model})")
        content = completion.choices[0].message.content
        if content is None:
            raise ResponderError(f"responder returned no text (finish_reason "
                                 f"{completion.choices[0].finish_reason}, model {model})")
        spoken = extract_spoken(content)
        log.debug("call %s: responder reply %d chars", req.call_id, len(spoken))
        return spoken

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()


_GOODBYE = re.compile(r"\b(good\s*-?\s*bye|bye|that'?s all|that is all|hang up)\b", re.I)


class OfflineResponder:
    """OFFLINE responder: no model, no network. Echoes the caller's last line so
    the mock carrier and ``voicecall demo`` can hold a conversation; every line
    says "(offline responder)" so nobody mistakes it for a real assistant."""

    GREETING = "Hello, this is the offline responder. What would you like to say?"
    CLOSING = "Thanks for calling. Goodbye. (offline responder)"

    async def reply(self, req: ReplyRequest) -> str:
        said = next((t.text for t in reversed(req.transcript) if t.role == "caller"), None)
        if said is None or not said.strip():
            return self.GREETING
        said = " ".join(said.split())
        if _GOODBYE.search(said):
            return self.CLOSING
        if len(said) > 200:
            said = said[:200].rstrip() + "…"
        return f'You said: "{said}". (offline responder) Anything else?'

    async def close(self) -> None:
        return None


def make_responder(settings: Any) -> Responder:
    """``OpenAIResponder`` when ``responseModel`` and an API key are set, else
    ``OfflineResponder``. The key is ``response.apiKey`` (the config loader merges
    ``OPENAI_API_KEY`` there), or ``tts.openai.apiKey`` when no ``response.baseUrl``
    points elsewhere: an OpenAI key is only ever sent to OpenAI."""
    model = settings.get("responseModel")
    base_url = settings.get("response.baseUrl")
    api_key = settings.get("response.apiKey") or (
        None if base_url else settings.get("tts.openai.apiKey"))
    if not model:
        return OfflineResponder()
    if not api_key:
        log.warning("responseModel %r is set but no API key (response.apiKey or OPENAI_API_KEY); "
                    "replies come from the offline responder", model)
        return OfflineResponder()
    timeout_ms = settings.get("responseTimeoutMs") or 30000
    return OpenAIResponder(api_key=api_key, model=model, base_url=base_url,
                           timeout_s=float(timeout_ms) / 1000.0,
                           system_prompt=settings.get("responseSystemPrompt"))
