"""The engine's side of the mock carrier: neutral JSON documents, signed JSON
webhooks, a small REST client. Nothing here knows it talks to a local process;
the engine treats it exactly like Twilio (DESIGN §4, "Every carrier authenticates").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, urlsplit

from voicecall.engine.errors import ProviderError, VoiceCallError
from voicecall.engine.events import Event
from voicecall.engine.program import ENGINE_STEPS, Program, Step, step_json
from voicecall.providers.base import CallRef, CallUrls, PlaceRequest, Reply, WebhookRequest

if TYPE_CHECKING:
    import aiohttp

    from voicecall.engine.clock import Clock

SIGNATURE_HEADERS = ("x-voicecall-timestamp", "x-voicecall-signature")
REST_TIMEOUT_S = 10.0

# The carrier's end reasons → our terminal state names (ARCHITECTURE "Events").
# "canceled" is our own REST hang-up; "rejected" is our own <reject>.
END_REASONS: dict[str, str] = {
    "completed": "completed",
    "hangup-user": "hangup-user",
    "busy": "busy",
    "no-answer": "no-answer",
    "failed": "failed",
    "canceled": "hangup-bot",
    "rejected": "hangup-bot",
}
ANSWERED_BY = ("human", "machine", "fax", "unknown")
STATUS_EVENTS = {"initiated": "call.initiated", "ringing": "call.ringing", "answered": "call.answered"}


class MockWebhookError(VoiceCallError):
    """A mock carrier request the engine cannot read; the server answers 400."""

    code = "bad_request"


class MockRenderError(VoiceCallError):
    """A program step that must never reach a carrier (an engine bug, not a flow error)."""

    code = "render_error"


def dumps(value: Any) -> bytes:
    """Canonical JSON: sorted keys, no spaces, so snapshots and signatures are stable."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def document(program: Program, urls: CallUrls) -> dict[str, Any]:
    """A program as the mock carrier's document: ``{"commands": [{kind: params}, ...]}``."""
    commands: list[dict[str, Any]] = []
    for step in program.steps:
        commands.extend(_commands(step, urls))
    return {"commands": commands}


def _commands(step: Step, urls: CallUrls) -> list[dict[str, Any]]:
    if step.kind in ENGINE_STEPS:
        raise MockRenderError(f"step {step.kind!r} is run by the engine and cannot be sent to a carrier")
    if step.kind == "gather":
        token = step.params.get("token")
        command = step_json(step)
        command["gather"]["action"] = urls.webhook("gather", token)
        # A gather with no input falls through to the next command, exactly like TwiML.
        return [command, {"redirect": {"url": urls.webhook("noinput", token)}}]
    if step.kind == "keepalive":
        seconds = int(step.params.get("seconds", 0) or 0)
        pause = [{"pause": {"seconds": seconds}}] if seconds > 0 else []
        return [*pause, {"redirect": {"url": urls.webhook("resume")}}]
    return [step_json(step)]


def parse_events(req: WebhookRequest) -> list[Event]:
    """Pure: one mock carrier request → neutral events.

    The body is ``{"sid", "event", "seq", "url", "from", "to", "direction", ...}``;
    the query carries ``callId`` (absent for inbound), ``type`` and ``token``.
    ``initiated/ringing/answered/ended`` are lifecycle events, ``speech`` and
    ``digits`` turn results, a ``redirect`` to a ``type=noinput`` URL a
    ``gather.timeout``, any other redirect nothing, ``inbound`` a new call,
    ``machine`` the detection result. Each event's key is ``mock:<sid>:<seq>``.
    Anything else raises MockWebhookError (the server answers 400).
    """
    try:
        body = json.loads(req.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MockWebhookError(f"mock webhook body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise MockWebhookError(f"mock webhook body must be a JSON object, got {type(body).__name__}")
    sid, event, seq = body.get("sid"), body.get("event"), body.get("seq")
    if not isinstance(sid, str) or not sid:
        raise MockWebhookError("mock webhook body lacks 'sid' (a non-empty string)")
    if not isinstance(event, str) or not event:
        raise MockWebhookError("mock webhook body lacks 'event' (a non-empty string)")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise MockWebhookError(f"mock webhook body lacks 'seq' (a non-negative integer), got {seq!r}")
    _check_signed_query(req, body)
    call_id, type_, token = req.q("callId"), req.q("type"), req.q("token")

    def ev(kind: str, data: dict[str, Any] | None = None, *, with_token: bool = False) -> list[Event]:
        return [Event(kind, data or {}, call_id=call_id, provider_call_id=sid,
                      token=token if with_token else None, key=f"mock:{sid}:{seq}", seq=seq)]

    if event == "inbound":
        if call_id is not None or type_ != "voice":
            raise MockWebhookError("an inbound mock call arrives as type=voice without callId")
        return ev("call.initiated", {"direction": "inbound", "from": _field(body, "from"), "to": _field(body, "to")})
    if event in STATUS_EVENTS:
        data = {k: body[k] for k in ("direction", "from", "to") if isinstance(body.get(k), str)}
        return ev(STATUS_EVENTS[event], data if event == "initiated" else {})
    if event == "ended":
        reason = body.get("reason")
        if reason not in END_REASONS:
            raise MockWebhookError(f"mock 'ended' event has reason {reason!r}; known: {', '.join(END_REASONS)}")
        return ev("call.ended", {"reason": END_REASONS[reason]})
    if event == "speech":
        confidence = body.get("confidence", 1.0)
        if not isinstance(confidence, int | float) or isinstance(confidence, bool):
            raise MockWebhookError(f"mock 'speech' event has a non-numeric confidence {confidence!r}")
        return ev("speech.final", {"text": _field(body, "text"), "confidence": float(confidence)}, with_token=True)
    if event == "digits":
        return ev("dtmf", {"digits": _field(body, "digits")}, with_token=True)
    if event == "noinput" or (event == "redirect" and type_ == "noinput"):
        # The carrier just follows the redirect after a silent gather; the URL says what it means.
        return ev("gather.timeout", {}, with_token=True)
    if event == "machine":
        answered_by = body.get("answeredBy")
        if answered_by not in ANSWERED_BY:
            raise MockWebhookError(f"mock 'machine' event has answeredBy {answered_by!r}; "
                                   f"known: {', '.join(ANSWERED_BY)}")
        return ev("machine.detected", {"answeredBy": answered_by})
    if event == "redirect":
        return []
    raise MockWebhookError(f"unknown mock event {event!r}")


def _field(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise MockWebhookError(f"mock {body.get('event')!r} event lacks {name!r} (a string)")
    return value


def _check_signed_query(req: WebhookRequest, body: dict[str, Any]) -> None:
    """The signature covers the body only, so the carrier echoes the URL it posted to
    in the body; a query edited in transit (another callId, type or token) is refused."""
    url = body.get("url")
    if not isinstance(url, str):
        raise MockWebhookError("mock webhook body lacks 'url' (the URL the carrier posted to)")
    try:
        signed = dict(parse_qsl(urlsplit(url).query))
    except ValueError:
        raise MockWebhookError(f"mock webhook body has an unreadable 'url' {url[:80]!r}") from None
    for name in ("callId", "type", "token"):
        if signed.get(name) != req.q(name):
            raise MockWebhookError(f"query {name!r} differs from the signed URL in the body")


class MockProvider:
    """``providers.base.Provider`` for the built-in mock carrier (document style)."""

    name = "mock"
    style: Literal["document", "command"] = "document"
    capabilities = frozenset({"say", "play", "pause", "gather.speech", "gather.dtmf", "dtmf",
                              "redirect", "reject", "amd"})
    signature_headers = SIGNATURE_HEADERS

    def __init__(self, settings: Any, *, store_dir: Path, clock: Clock, api_base_url: str):
        self.settings = settings
        self.store_dir = Path(store_dir)
        self.clock = clock
        self.api_base_url = api_base_url.rstrip("/")
        self._secret: bytes | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def secret(self) -> bytes:
        """The shared HMAC secret in ``<store>/mock.secret`` (created on first use)."""
        if self._secret is None:
            from voicecall.engine.security import load_or_create_mock_secret

            self._secret = load_or_create_mock_secret(self.store_dir)
        return self._secret

    # -- webhooks (pure apart from the secret file) ---------------------------------
    def verify(self, req: WebhookRequest) -> str:
        from voicecall.engine.security import verify_mock

        return verify_mock(self.secret, req.headers, req.body, self.clock.now())

    def parse(self, req: WebhookRequest) -> list[Event]:
        return parse_events(req)

    def render(self, program: Program, urls: CallUrls) -> Reply:
        return Reply(dumps(document(program, urls)), "application/json")

    def ack(self, req: WebhookRequest) -> Reply:
        return Reply(dumps({"ok": True}), "application/json")

    # -- REST ------------------------------------------------------------------------
    async def place(self, call: PlaceRequest) -> str:
        payload = {
            "to": call.to_number,
            "from": call.from_number,
            "url": call.urls.webhook("voice"),
            "statusCallback": call.urls.webhook("status"),
            "document": document(call.opening, call.urls) if call.opening else None,
            "timeLimit": call.time_limit_s,
            "ringTimeout": call.ring_timeout_s,
            "sendDigits": call.send_digits,
            "machineDetection": call.machine_detection,
            "machineCallback": call.urls.webhook("machine") if call.machine_detection else None,
        }
        reply = await self._request("POST", "/v1/calls", payload)
        sid = reply.get("sid")
        if not isinstance(sid, str) or not sid:
            raise ProviderError(f"mock carrier answered without a call sid: {reply!r}", provider=self.name)
        return sid

    async def push(self, call: CallRef, program: Program, urls: CallUrls) -> None:
        sid = self._sid(call)
        await self._request("POST", f"/v1/calls/{sid}", {"document": document(program, urls)})

    async def hangup(self, call: CallRef) -> bool:
        if not call.provider_call_id:
            return False                            # never placed: nothing to hang up
        try:
            await self._request("POST", f"/v1/calls/{call.provider_call_id}", {"status": "completed"})
        except ProviderError as exc:
            if exc.status != 404:                   # already gone is what we wanted
                raise
            return False
        return True

    async def fetch_status(self, call: CallRef) -> str:
        """The carrier's status of a call (``queued ringing in-progress completed busy …``)."""
        return str((await self._request("GET", f"/v1/calls/{self._sid(call)}", {})).get("status", ""))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _sid(self, call: CallRef) -> str:
        if not call.provider_call_id:
            raise ProviderError(f"call {call.call_id} has no mock call sid yet", provider=self.name)
        return call.provider_call_id

    async def _request(self, method: str, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REST_TIMEOUT_S))
        url = f"{self.api_base_url}{path}"
        try:
            async with self._session.request(method, url, data=dumps(payload),
                                             headers={"Content-Type": "application/json"}) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ProviderError(f"mock carrier unreachable at {self.api_base_url}: {exc or type(exc).__name__}",
                                provider=self.name, retryable=True) from None
        try:
            body = json.loads(text) if text else {}
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        if status >= 400:
            message = body.get("message") or text[:200] or f"HTTP {status}"
            raise ProviderError(f"mock carrier refused {method} {path}: {message}", provider=self.name,
                                status=status, carrier_code=body.get("code"), retryable=status >= 500)
        return body
