"""A local Twilio: the REST Calls API the official SDK talks to, and a carrier
that calls our webhook back the way Twilio does (signed, form-encoded).

Only for tests, ``flows simulate`` and the demo; it binds 127.0.0.1 only.
Call execution lives in ``twiml_runner.py``.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Mapping
from email.utils import formatdate
from typing import Any

from voicecall.engine.clock import Clock, RealClock
from voicecall.providers.callee import Callee
from voicecall.providers.emulation import (
    Chaos,
    FarSide,
    LogEntry,
    RestServer,
    basic_auth,
    coerce_chaos,
    stop_document_calls,
    with_type,
)
from voicecall.providers.twilio.twiml_runner import AppError, CallRunner, EmuCall, Fetch, form_body

__all__ = ["Chaos", "LogEntry", "TwilioEmulator"]

API = "/2010-04-01/Accounts/{account}"
E164 = re.compile(r"^\+[1-9]\d{1,14}$")
TWIML_LIMIT = 4000
WEBHOOK_TIMEOUT_S = 15.0     # Twilio gives a webhook about 15 s
STATUS_EVENTS = frozenset({"initiated", "ringing", "answered", "completed"})


class TwilioEmulator(FarSide):
    def __init__(self, account_sid: str, auth_token: str, *, default_callee: Callee | None = None,
                 chaos: Chaos | Mapping[str, Any] | Any = None, time_scale: float = 1.0,
                 clock: Clock | None = None):
        """``clock``: shared with the runtime in simulations (e.g. a ScaledClock);
        every emulated duration is ``seconds * time_scale`` on it."""
        self.account_sid = account_sid
        self._token = auth_token
        self._default_callee = default_callee
        self.chaos = coerce_chaos(chaos)
        self.time_scale = time_scale
        self.clock: Clock = clock or RealClock()
        self._callees: dict[str, Callee] = {}
        self._answered_by: dict[str, str] = {}
        self.calls: dict[str, EmuCall] = {}
        self._runners: dict[str, asyncio.Task[None]] = {}
        self._fail_next: list[tuple[int, int, str]] = []
        self.requests: list[tuple[str, str]] = []      # (method, path) of every REST request
        self._rest = RestServer()
        self.base_url = ""

    # -- public API -----------------------------------------------------------

    async def start(self) -> str:
        from aiohttp import web

        app = web.Application()
        calls = API + "/Calls"
        app.router.add_post(calls + ".json", self._create)
        app.router.add_post(calls + "/{sid}.json", self._update)
        app.router.add_get(calls + "/{sid}.json", self._fetch)
        self.base_url = await self._rest.start(app, WEBHOOK_TIMEOUT_S)
        return self.base_url

    async def stop(self) -> None:
        await stop_document_calls(self._runners.values(), self.calls.values())
        await self._rest.stop()

    def fail_next(self, count: int = 1, status: int = 500, message: str = "Internal Server Error") -> None:
        """The next ``count`` REST requests get an HTTP ``status`` error (retry tests)."""
        self._fail_next.extend([(status, 20500 if status >= 500 else 20001, message)] * count)

    async def dial_in(self, from_: str, to: str, webhook_url: str, callee: Callee | None = None,
                      *, status_callback: str | None = None) -> str:
        """A caller rings our number: Twilio posts the voice request (Direction=inbound).

        The number's status callback is ``<webhook_url>?type=status``, as an operator
        configures it (DESIGN §8); pass ``status_callback=""`` for a number without one.
        """
        if status_callback is None:
            status_callback = with_type(webhook_url, "status")
        call = EmuCall(sid=_sid(), to=to, from_=from_, direction="inbound", created=self.now(),
                       callee=callee or Callee(), first=Fetch(webhook_url, "POST"),
                       status_callback=status_callback or None,
                       status_events=STATUS_EVENTS if status_callback else frozenset())
        self._launch(call)
        return call.sid

    def _ended(self, call: EmuCall) -> dict[str, Any]:
        return self._call_json(call)

    async def post(self, url: str, method: str, params: dict[str, str]) -> tuple[int, str]:
        """A signed webhook request to ``url``, as Twilio sends it."""
        import aiohttp

        signed: tuple[tuple[str, str], ...]
        if method == "GET":
            sep = "&" if "?" in url else "?"
            target, body, signed = f"{url}{sep}{form_body(params).decode()}", None, ()
        else:
            target, body, signed = url, form_body(params), tuple(params.items())
        # Signed by the SDK's own validator, not ours: the emulator is an independent oracle.
        from twilio.request_validator import RequestValidator

        headers = {"X-Twilio-Signature": RequestValidator(self._token).compute_signature(target, dict(signed)),
                   "User-Agent": "TwilioProxy/1.1"}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            async with self._rest.session.request(method, target, data=body, headers=headers) as resp:
                return resp.status, await resp.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AppError(11200, f"HTTP retrieval failure: {type(exc).__name__} for {url}") from None

    # -- REST -------------------------------------------------------------------

    async def _create(self, request: Any) -> Any:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        form = await request.post()
        to, from_ = form.get("To", ""), form.get("From", "")
        if not _possible_number(to):
            return _error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if not _possible_number(from_):
            return _error(400, 21212, f"The 'From' number {from_} is not a valid phone number, "
                                      "shortcode, or alphanumeric sender ID.")
        twiml, url = form.get("Twiml"), form.get("Url")
        if twiml is not None and len(twiml) > TWIML_LIMIT:
            # [UNVERIFIED code] Twilio documents the 4000-character limit, not the error number.
            return _error(400, 21201, f"Twiml exceeds {TWIML_LIMIT} characters ({len(twiml)}).")
        if twiml is None and not url:
            return _error(400, 21205, "Url parameter is required (or Twiml, or ApplicationSid).")
        if twiml is None and not str(url).startswith(("http://", "https://")):
            return _error(400, 21205, f"Url is not a valid URL: {url}")
        events = frozenset(form.getall("StatusCallbackEvent", [])) or frozenset({"completed"})
        unknown = events - STATUS_EVENTS
        if unknown:
            return _error(400, 21626, f"Invalid StatusCallbackEvent: {sorted(unknown)[0]}")
        try:
            timeout = min(600, int(form.get("Timeout", 60)))
            time_limit = int(form["TimeLimit"]) if form.get("TimeLimit") else None
        except ValueError:
            return _error(400, 20001, "Timeout and TimeLimit must be whole numbers.")
        first = (Fetch(twiml=twiml, origin="inline") if twiml is not None
                 else Fetch(url, form.get("Method", "POST").upper()))
        callee = self.callee_for(to)
        call = EmuCall(sid=_sid(), to=to, from_=from_, direction="outbound-api", callee=callee, created=self.now(),
                       first=first, status_callback=form.get("StatusCallback"), status_events=events,
                       timeout=timeout, time_limit=time_limit, send_digits=form.get("SendDigits"),
                       machine_detection=form.get("MachineDetection"),
                       answered_by=self.answered_by(to))
        call.note(self.now(), "rest", {"create": {k: form.getall(k) for k in sorted(set(form.keys()))}})
        self._launch(call)
        return _json(201, self._call_json(call))

    async def _update(self, request: Any) -> Any:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        call = self.calls.get(request.match_info["sid"])
        if call is None:
            return _not_found(request.path)
        form = await request.post()
        runner = CallRunner(self, call)
        status = form.get("Status")
        if status in ("completed", "canceled"):
            call.note(self.now(), "rest", {"status": status})
            if call.live and (status == "completed" or call.answered_at is None):
                runner.end("completed" if call.answered_at else "canceled")
            return _json(200, self._call_json(call))
        if status:
            return _error(400, 20001, f"Status must be completed or canceled, not {status}.")
        twiml, url = form.get("Twiml"), form.get("Url")
        if twiml is None and url is None:
            return _json(200, self._call_json(call))
        if call.status != "in-progress":
            return _error(400, 21220, "Call is not in-progress. Cannot redirect.")
        if twiml is not None and len(twiml) > TWIML_LIMIT:
            return _error(400, 21201, f"Twiml exceeds {TWIML_LIMIT} characters ({len(twiml)}).")
        call.note(self.now(), "rest", {"twiml": twiml, "url": url})
        runner.replace(Fetch(twiml=twiml, origin="push") if twiml is not None
                       else Fetch(url, form.get("Method", "POST").upper()))
        return _json(200, self._call_json(call))

    async def _fetch(self, request: Any) -> Any:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        call = self.calls.get(request.match_info["sid"])
        return _json(200, self._call_json(call)) if call else _not_found(request.path)

    def _refuse(self, request: Any) -> Any:
        """HTTP Basic auth against the account, then any injected failure."""
        self.requests.append((request.method, request.path))
        user, password = basic_auth(request.headers.get("Authorization", ""))
        if (user != self.account_sid or not secrets.compare_digest(password, self._token)
                or request.match_info["account"] != self.account_sid):
            return _error(401, 20003, "Authenticate")
        failure = self._injected_failure()
        return None if failure is None else _error(*failure)

    def _launch(self, call: EmuCall) -> None:
        self.calls[call.sid] = call
        self._runners[call.sid] = asyncio.create_task(CallRunner(self, call).run())

    def _call_json(self, call: EmuCall) -> dict[str, Any]:
        uri = f"{API.format(account=self.account_sid)}/Calls/{call.sid}.json"
        duration = (int((call.ended_at or 0) - call.answered_at) if call.answered_at and call.ended_at else None)
        return {
            "sid": call.sid, "account_sid": self.account_sid, "api_version": "2010-04-01",
            "to": call.to, "to_formatted": call.to, "from": call.from_, "from_formatted": call.from_,
            "status": call.status, "direction": call.direction,
            "date_created": formatdate(call.created, usegmt=True),
            "date_updated": formatdate(self.now(), usegmt=True),
            "start_time": formatdate(call.answered_at, usegmt=True) if call.answered_at else None,
            "end_time": formatdate(call.ended_at, usegmt=True) if call.ended_at else None,
            "duration": str(duration) if duration is not None else None,
            "price": None, "price_unit": "USD", "answered_by": None, "parent_call_sid": None,
            "uri": uri, "subresource_uris": {},
        }


def _possible_number(number: str) -> bool:
    """E.164 and a plausible length for its country, as Twilio checks before dialing."""
    import phonenumbers

    if not E164.match(number):
        return False
    try:
        return bool(phonenumbers.is_possible_number(phonenumbers.parse(number)))
    except phonenumbers.NumberParseException:
        return False


def _sid() -> str:
    return "CA" + secrets.token_hex(16)


def _json(status: int, body: dict[str, Any]) -> Any:
    from aiohttp import web

    return web.json_response(body, status=status)


def _error(status: int, code: int, message: str) -> Any:
    return _json(status, {"code": code, "message": message,
                          "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status})


def _not_found(path: str) -> Any:
    return _error(404, 20404, f"The requested resource {path} was not found")
