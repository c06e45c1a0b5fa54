"""TwilioProvider: a document carrier (TwiML) driven through the REST Calls API."""

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
from voicecall.providers.twilio import parse as parse_mod
from voicecall.providers.twilio import signature
from voicecall.providers.twilio.client import NOT_FOUND, TwilioRest
from voicecall.providers.twilio.render import render_twiml

log = logging.getLogger("voicecall.providers.twilio")

TWIML = "text/xml"
EMPTY_RESPONSE = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'
INLINE_TWIML_LIMIT = 4000          # REST `Twiml` parameter (reference/protocols.md §2)
RING_TIMEOUT_RANGE = (1, 600)      # REST `Timeout`
TIME_LIMIT_MAX = 14400             # REST `TimeLimit`: four hours
STATUS_EVENTS = ("initiated", "ringing", "answered", "completed")
# Webhook types whose reply Twilio executes as the call's next document.


class TwilioProvider:
    name = "twilio"
    style: Literal["document", "command"] = "document"
    capabilities = frozenset({
        "say", "play", "pause", "gather.speech", "gather.dtmf", "dtmf",
        "redirect", "reject", "amd", "stream",
    })
    signature_headers = (signature.SIGNATURE_HEADER,)
    # The runtime sends an opening inline only when its document fits (REST `Twiml`).
    inline_limit = INLINE_TWIML_LIMIT

    def __init__(self, settings: Any, *, store_dir: Path | None = None, clock: Clock | None = None,
                 sleep: Callable[[float], Awaitable[None]] | None = None, timeout_s: float = 10.0,
                 api_base_url: str | None = None):
        """``api_base_url`` overrides ``twilio.apiBaseUrl`` (tests, the demo); ``sleep``
        is the retry back-off (defaults to the clock's)."""
        self._settings = settings
        self._store_dir = store_dir
        self._token = str(settings.get("twilio.authToken") or "")
        self._voice = settings_voice(settings)
        self._from = settings.get("fromNumber")
        self._time_limit = settings.get("maxDurationSeconds")
        self.rest = TwilioRest(
            str(settings.get("twilio.accountSid") or ""), self._token,
            region=str(settings.get("twilio.region") or "us1"),
            api_base_url=api_base_url or settings.get("twilio.apiBaseUrl"),
            timeout_s=timeout_s,
            sleep=sleep or (clock.sleep if clock is not None else asyncio.sleep),
        )

    # -- webhooks (pure) ---------------------------------------------------

    def verify(self, req: WebhookRequest) -> str:
        return signature.verify(self._token, req)

    def parse(self, req: WebhookRequest) -> list[Event]:
        return parse_mod.parse(req)

    def render(self, program: Program, urls: CallUrls) -> Reply:
        return Reply(render_twiml(program, urls, self._voice).encode("utf-8"), TWIML)

    def ack(self, req: WebhookRequest) -> Reply:
        """Status callbacks get an empty document. Any request whose reply Twilio
        would execute gets a short keep-alive instead: an empty ``<Response/>``
        there would hang the call up (DESIGN §3.1)."""
        kind = req.q("type") or "voice"
        if kind not in DOCUMENT_TYPES:
            return Reply(EMPTY_RESPONSE, TWIML)
        return self.render(keepalive_for(req), CallUrls(req.url, req.q("callId") or ""))

    # -- REST --------------------------------------------------------------

    async def place(self, call: PlaceRequest) -> str:
        from_number = call.from_number or self._from
        if not from_number:
            raise ProviderError("fromNumber is required to place a Twilio call", provider="twilio")
        params: dict[str, Any] = {
            "to": call.to_number,
            "from_": from_number,
            "status_callback": call.urls.webhook("status"),
            "status_callback_event": list(STATUS_EVENTS),
            "status_callback_method": "POST",
            "timeout": clamp("Twilio", "ring timeout", call.ring_timeout_s, *RING_TIMEOUT_RANGE),
        }
        time_limit = call.time_limit_s or self._time_limit
        if time_limit:
            params["time_limit"] = clamp("Twilio", "maxDurationSeconds", int(time_limit), 1, TIME_LIMIT_MAX)
        if call.send_digits:
            params["send_digits"] = call.send_digits
        if call.machine_detection:
            params["machine_detection"] = "Enable"
        twiml = self.render(call.opening, call.urls).body.decode("utf-8") if call.opening else None
        if twiml is not None and len(twiml) <= INLINE_TWIML_LIMIT:
            # Notify calls speak at once, without waiting for a document fetch.
            params["twiml"] = twiml
        else:
            params["url"] = call.urls.webhook("voice")
            params["method"] = "POST"
        return await self.rest.create(**params)

    async def push(self, call: CallRef, program: Program, urls: CallUrls) -> None:
        sid = _sid(call)
        twiml = self.render(program, urls).body.decode("utf-8")
        if len(twiml) <= INLINE_TWIML_LIMIT:
            await self.rest.update(sid, twiml=twiml)
        else:
            # Too long to send inline: send the call to fetch it (the runtime serves
            # the undelivered program on the resume request).
            await self.rest.update(sid, url=urls.webhook("resume"), method="POST")

    async def hangup(self, call: CallRef) -> bool:
        """True when Twilio will report the call's end (a status callback follows);
        False when Twilio no longer knows the call (20404) or it was never placed."""
        if not call.provider_call_id:
            return False
        sid = call.provider_call_id
        try:
            await self.rest.update(sid, idempotent=True, status="completed")
        except ProviderError as exc:
            if exc.status == 404 or str(exc.carrier_code) == str(NOT_FOUND):
                log.info("Twilio call %s is already gone (20404): nothing to hang up", sid)
                return False
            raise
        return True

    async def fetch_status(self, call: CallRef) -> str:
        """The REST status of a call (``queued ringing in-progress completed …``)."""
        return str((await self.rest.fetch(_sid(call))).status)

    async def close(self) -> None:
        await self.rest.close()


def _sid(call: CallRef) -> str:
    if not call.provider_call_id:
        raise ProviderError(f"call {call.call_id} has no Twilio CallSid yet", provider="twilio")
    return call.provider_call_id



