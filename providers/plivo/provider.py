"""PlivoProvider: a document carrier (Plivo XML) driven through the Call API.

Plivo cannot take XML with the call request, and its live update is a
*transfer* of the call to a URL: so ``inline_limit = 0`` (the opening is
served on the answer_url fetch) and ``push_fetches = True`` (``push``
transfers the call to our resume URL, where the runtime serves the pending
program). See ARCHITECTURE "Carrier styles".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

from voicecall.engine.clock import Clock
from voicecall.engine.errors import ProviderError
from voicecall.engine.events import Event
from voicecall.engine.program import Program
from voicecall.providers.base import DOCUMENT_TYPES, CallRef, CallUrls, PlaceRequest, Reply, WebhookRequest
from voicecall.providers.common import clamp, keepalive_for, settings_voice
from voicecall.providers.plivo import parse as parse_mod
from voicecall.providers.plivo import signature
from voicecall.providers.plivo.client import PlivoRest
from voicecall.providers.plivo.render import render_xml

log = logging.getLogger("voicecall.providers.plivo")

XML = "text/xml"
RING_TIMEOUT_RANGE = (1, 120)      # ring_timeout, s; the SDK's default 120 is the top [UNVERIFIED upper bound]
TIME_LIMIT_MAX = 14400             # time_limit: four hours, Plivo's default and cap
# Webhook types whose reply Plivo executes as the call's next document.


class PlivoProvider:
    name = "plivo"
    style: Literal["document", "command"] = "document"
    capabilities = frozenset({
        "say", "play", "pause", "gather.speech", "gather.dtmf", "dtmf",
        "redirect", "reject", "amd", "stream",
    })
    # Plivo sends V2 and V3 headers on every request; V3 (which also signs the
    # form fields) is the one we require and check.
    signature_headers = (signature.V3_HEADER, signature.V3_NONCE_HEADER)
    inline_limit = 0                # no inline XML at placement: served on the answer_url fetch
    push_fetches = True             # live update = transfer to urls.webhook("resume")

    def __init__(self, settings: Any, *, store_dir: Path | None = None, clock: Clock | None = None,
                 sleep: Callable[[float], Awaitable[None]] | None = None, timeout_s: float = 10.0,
                 api_base_url: str | None = None):
        """``api_base_url`` overrides ``plivo.apiBaseUrl`` (tests, the demo); ``sleep``
        is the retry back-off (defaults to the clock's)."""
        self._store_dir = store_dir
        self._token = str(settings.get("plivo.authToken") or "")
        self._voice = settings_voice(settings)
        self._from = settings.get("fromNumber")
        self._time_limit = settings.get("maxDurationSeconds")
        self.rest = PlivoRest(
            str(settings.get("plivo.authId") or ""), self._token,
            api_base_url=api_base_url or settings.get("plivo.apiBaseUrl"),
            timeout_s=timeout_s,
            sleep=sleep or (clock.sleep if clock is not None else asyncio.sleep),
        )

    # -- webhooks (pure) ---------------------------------------------------

    def verify(self, req: WebhookRequest) -> str:
        return signature.verify_v3(self._token, req)

    def verify_v2(self, req: WebhookRequest) -> str:
        return signature.verify_v2(self._token, req)

    def parse(self, req: WebhookRequest) -> list[Event]:
        return parse_mod.parse(req)

    def render(self, program: Program, urls: CallUrls) -> Reply:
        return Reply(render_xml(program, urls, self._voice).encode("utf-8"), XML)

    def ack(self, req: WebhookRequest) -> Reply:
        """Plivo ignores what ring_url, hangup_url and machine detection callbacks
        get back: an empty 200. A request whose reply Plivo would execute gets a
        short keep-alive: an empty document there would hang the call up."""
        kind = req.q("type") or "voice"
        if kind not in DOCUMENT_TYPES:
            return Reply(b"", "text/plain")
        return self.render(keepalive_for(req), CallUrls(req.url, req.q("callId") or ""))

    # -- REST --------------------------------------------------------------

    async def place(self, call: PlaceRequest) -> str:
        from_number = call.from_number or self._from
        if not from_number:
            raise ProviderError("fromNumber is required to place a Plivo call", provider="plivo")
        urls = call.urls
        params: dict[str, Any] = {
            # Plivo writes numbers as digits with the country code; SIP URIs pass as they are.
            "from_": _plivo_number(str(from_number)),
            "to_": _plivo_number(call.to_number),
            "answer_url": urls.webhook("voice"), "answer_method": "POST",
            "ring_url": urls.webhook("status"), "ring_method": "POST",
            "hangup_url": urls.webhook("hangup"), "hangup_method": "POST",
            "ring_timeout": clamp("Plivo", "ring timeout", call.ring_timeout_s, *RING_TIMEOUT_RANGE),
        }
        time_limit = call.time_limit_s or self._time_limit
        if time_limit:
            params["time_limit"] = clamp("Plivo", "maxDurationSeconds", int(time_limit), 1, TIME_LIMIT_MAX)
        if call.send_digits:
            params["send_digits"] = call.send_digits     # w = 0.5 s, as in dtmfSequence
        if call.machine_detection:
            params["machine_detection"] = "true"
            params["machine_detection_url"] = urls.webhook("machine")
            params["machine_detection_method"] = "POST"
        return await self.rest.create(**params)

    async def push(self, call: CallRef, program: Program, urls: CallUrls) -> None:
        """Transfer the live call to our resume URL; the runtime serves ``program`` there."""
        await self.rest.transfer(_uuid(call), urls.webhook("resume"))

    async def hangup(self, call: CallRef) -> bool:
        """True when Plivo will report the end (its hangup_url follows); False when
        it no longer knows the call. Before any callback the id is the request_uuid
        of a call still queued or ringing: that is cancelled instead."""
        if not call.provider_call_id:
            return False
        uuid = call.provider_call_id
        try:
            await self.rest.hangup(uuid)
            return True
        except ProviderError as exc:
            if exc.status != 404:
                raise
        try:
            await self.rest.cancel(uuid)
            return True
        except ProviderError as exc:
            if exc.status != 404:
                raise
        log.info("Plivo call %s is already gone (404): nothing to hang up", uuid)
        return False

    async def fetch_status(self, call: CallRef) -> str:
        """The live call's status (``ringing in-progress …``)."""
        return str(getattr(await self.rest.get(_uuid(call)), "call_status", "") or "")

    async def close(self) -> None:
        await self.rest.close()


def _plivo_number(number: str) -> str:
    return number[1:] if number.startswith("+") else number


def _uuid(call: CallRef) -> str:
    if not call.provider_call_id:
        raise ProviderError(f"call {call.call_id} has no Plivo call UUID yet", provider="plivo")
    return call.provider_call_id



