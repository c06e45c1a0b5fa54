"""The one protocol every carrier implements, and the registry of carriers.

Adding a carrier means a package under ``providers/`` and one line in
``REGISTRY``; no engine module changes.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import urlencode

if TYPE_CHECKING:
    from voicecall.engine.events import Event
    from voicecall.engine.program import Program

REGISTRY: dict[str, str] = {
    "mock": "voicecall.providers.mock:MockProvider",
    "twilio": "voicecall.providers.twilio:TwilioProvider",
    "plivo": "voicecall.providers.plivo:PlivoProvider",
    "telnyx": "voicecall.providers.telnyx:TelnyxProvider",
}

# Webhook ``type`` values whose reply the carrier executes as the call's next document.
DOCUMENT_TYPES: frozenset[str] = frozenset({"voice", "gather", "noinput", "resume", "redirect"})

# Capability names a provider may declare and a flow may need.
CAPABILITIES = frozenset({
    "say", "play", "pause", "gather.speech", "gather.dtmf", "dtmf", "stream",
    "redirect", "reject", "amd", "record", "transfer",
})


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """A carrier's request after the size and header checks, before the signature."""

    method: str
    url: str                                   # the URL the carrier signed (engine/security.py)
    path: str
    query: tuple[tuple[str, str], ...]
    headers: Mapping[str, str]                 # lower-cased names
    body: bytes
    form: tuple[tuple[str, str], ...] = ()
    peer: str = ""
    received_at: float = 0.0

    def q(self, name: str) -> str | None:
        return next((v for k, v in self.query if k == name), None)

    def f(self, name: str) -> str | None:
        return next((v for k, v in self.form if k == name), None)


@dataclass(frozen=True, slots=True)
class Reply:
    body: bytes = b""
    content_type: str = "text/plain"
    status: int = 200


@dataclass(frozen=True, slots=True)
class CallUrls:
    """Every URL a carrier is given for one call, built from the public URL."""

    public_url: str
    call_id: str
    stream_url: str | None = None

    def webhook(self, type_: str, token: str | None = None) -> str:
        params = {"callId": self.call_id, "type": type_}
        if token:
            params["token"] = token
        sep = "&" if "?" in self.public_url else "?"
        return f"{self.public_url}{sep}{urlencode(params)}"


@dataclass(frozen=True, slots=True)
class CallRef:
    call_id: str
    provider_call_id: str | None


@dataclass(frozen=True, slots=True)
class PlaceRequest:
    call_id: str
    from_number: str
    to_number: str
    urls: CallUrls
    opening: Program | None = None        # rendered opening state, sent inline when possible
    ring_timeout_s: int = 30
    time_limit_s: int | None = None
    send_digits: str | None = None
    machine_detection: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)


class Provider(Protocol):
    name: str
    style: Literal["document", "command"]
    capabilities: frozenset[str]
    signature_headers: tuple[str, ...]

    def verify(self, req: WebhookRequest) -> str:
        """Return the replay key of an authentic request; raise SignatureError otherwise."""
        ...

    def parse(self, req: WebhookRequest) -> list[Event]: ...

    def render(self, program: Program, urls: CallUrls) -> Reply: ...

    def ack(self, req: WebhookRequest) -> Reply: ...

    async def place(self, call: PlaceRequest) -> str: ...

    async def push(self, call: CallRef, program: Program, urls: CallUrls) -> None: ...

    async def hangup(self, call: CallRef) -> bool:
        """True when the carrier will report the call's end; False when it no longer knows the call."""
        ...

    async def close(self) -> None: ...


class CommandProvider(Provider, Protocol):
    """A command carrier (``style == "command"``, e.g. Telnyx): see ARCHITECTURE "Carrier styles"."""

    async def execute(self, call: CallRef, step: Any, urls: CallUrls, tag: str) -> None:
        """Send the command for one step; say/play report ``playback.done`` with ``tag``."""
        ...

    async def answer(self, call: CallRef, urls: CallUrls) -> None: ...


def provider_class(name: str) -> type:
    """Import a provider class by registry name (lazily: SDKs are heavy)."""
    try:
        target = REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown provider {name!r}; known: {', '.join(sorted(REGISTRY))}") from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
