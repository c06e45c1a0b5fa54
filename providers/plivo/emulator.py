"""A local Plivo: the Call API the official SDK talks to, and a carrier that
calls our webhook back the way Plivo does (form POSTs signed with V3 and V2).

Only for tests, ``flows simulate`` and the demo; it binds 127.0.0.1 only.
Call execution lives in ``runner.py``.

REST (JSON, Basic auth ``auth_id:auth_token``; errors ``{"api_id", "error"}``):
``POST /v1/Account/{id}/Call/`` → 201 ``{"api_id", "message": "call fired",
"request_uuid"}``; ``POST …/Call/{uuid}/`` transfer → 202; ``DELETE
…/Call/{uuid}/`` → 204; ``DELETE …/Request/{request_uuid}/`` (cancel a call not
yet answered) → 204; ``GET …/Call/{uuid}/`` → 200; unknown calls 404.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import secrets
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

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
from voicecall.providers.plivo.calls import AppError, EmuCall, Fetch
from voicecall.providers.plivo.runner import CallRunner

__all__ = ["Chaos", "LogEntry", "PlivoEmulator"]

API = "/v1/Account/{auth_id}"
WEBHOOK_TIMEOUT_S = 15.0
_NUMBER = re.compile(r"^\+?[1-9][0-9]{6,14}$")


class PlivoEmulator(FarSide):
    def __init__(self, auth_id: str, auth_token: str, *, clock: Clock | None = None,
                 default_callee: Callee | None = None, chaos: Chaos | Mapping[str, Any] | Any = None,
                 time_scale: float = 1.0):
        """``clock``: shared with the runtime in simulations (e.g. a ScaledClock);
        every emulated duration is ``seconds * time_scale`` on it."""
        if time_scale <= 0:
            raise ValueError(f"time_scale must be positive, got {time_scale!r}")
        self.auth_id = auth_id
        self._token = auth_token
        self.clock: Clock = clock or RealClock()
        self._default_callee = default_callee
        self.chaos = coerce_chaos(chaos)
        self.time_scale = time_scale
        self._callees: dict[str, Callee] = {}
        self._answered_by: dict[str, str] = {}
        self.calls: dict[str, EmuCall] = {}           # by call_uuid and by request_uuid
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._fail_next: list[tuple[int, str]] = []
        self.requests: list[tuple[str, str]] = []     # (method, path) of every REST request
        self._rest = RestServer()
        self.base_url = ""

    # -- public API -----------------------------------------------------------

    async def start(self) -> str:
        from aiohttp import web

        app = web.Application()
        account = API.format(auth_id="{auth_id}")
        app.router.add_post(account + "/Call/", self._create)
        app.router.add_post(account + "/Call/{uuid}/", self._transfer)
        app.router.add_delete(account + "/Call/{uuid}/", self._hangup)
        app.router.add_get(account + "/Call/{uuid}/", self._get)
        app.router.add_delete(account + "/Request/{uuid}/", self._cancel)
        self.base_url = await self._rest.start(app, WEBHOOK_TIMEOUT_S)
        return self.base_url

    async def stop(self) -> None:
        await stop_document_calls(self._tasks.values(), self.calls.values())
        await self._rest.stop()

    def number_key(self, number: str) -> str:
        return _digits(number)     # Plivo's spelling: digits, no '+'

    def fail_next(self, count: int = 1, status: int = 500, message: str = "internal server error") -> None:
        """The next ``count`` REST requests get an HTTP ``status`` error (retry tests)."""
        self._fail_next.extend([(status, message)] * count)

    async def dial_in(self, from_: str, to: str, webhook_url: str, callee: Callee | None = None,
                      *, hangup_url: str | None = None) -> str:
        """A caller rings our number: Plivo fetches the number's answer URL
        (Direction=inbound). Its hangup URL is ``<webhook_url>?type=hangup`` as
        an operator configures it; ``hangup_url=""`` for an application without one."""
        if hangup_url is None:
            hangup_url = with_type(webhook_url, "hangup")
        call = EmuCall(call_uuid=str(uuid.uuid4()), request_uuid=str(uuid.uuid4()), to=_digits(to),
                       from_=_digits(from_), direction="inbound", callee=callee or Callee(),
                       answer=Fetch(webhook_url, "POST", {"Event": "StartApp"}, "voice"),
                       hangup_url=hangup_url or None)
        self._launch(call)
        return call.call_uuid

    def _ended(self, call: EmuCall) -> dict[str, Any]:
        return self._call_json(call)

    async def post(self, url: str, params: Mapping[str, str], method: str = "POST") -> tuple[int, str]:
        """A webhook request as Plivo sends it: form POST (or GET), V3 and V2 signed."""
        import aiohttp
        from plivo.utils.signature_v3 import construct_get_url, construct_post_url, get_signature_v3

        nonce = "".join(secrets.choice("0123456789") for _ in range(20))
        if method == "GET":
            target = f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"
            body, signed = None, construct_get_url(target, {}).decode("utf-8")
        else:
            target, body = url, urlencode(params).encode("utf-8")
            signed = construct_post_url(url, dict(params)).decode("utf-8")
        # Signed by the SDK's own code, not ours: the emulator is an independent oracle.
        token = self._token.encode("utf-8")
        v2_base = urlunsplit((*urlsplit(url)[:3], "", ""))
        headers = {
            "X-Plivo-Signature-V3": get_signature_v3(token, signed, nonce).decode("ascii"),
            "X-Plivo-Signature-V3-Nonce": nonce,
            "X-Plivo-Signature-V2": base64.b64encode(
                hmac.new(token, (v2_base + nonce).encode("utf-8"), hashlib.sha256).digest()).decode("ascii"),
            "X-Plivo-Signature-V2-Nonce": nonce,
            "User-Agent": "PlivoHTTP",
        }
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            async with self._rest.session.request(method, target, data=body, headers=headers) as resp:
                return resp.status, await resp.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AppError(f"webhook {url} failed: {type(exc).__name__}") from None

    # -- REST -------------------------------------------------------------------

    async def _create(self, request: Any) -> Any:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        body = await _json_body(request)
        if body is None:
            return _error(400, "request body is not valid JSON")
        missing = [k for k in ("from", "to", "answer_url") if not body.get(k)]
        if missing:
            return _error(400, f"{missing[0]} parameter is required")
        to, from_ = str(body["to"]), str(body["from"])
        if "<" in to:
            return _error(400, "this emulator places one destination per call")
        for name, number in (("to", to), ("from", from_)):
            if not _possible(number):
                # [UNVERIFIED wording] Plivo answers 400 with an "error" string.
                return _error(400, f"invalid {name} number: {number}")
        urls = {k: body.get(k) for k in ("answer_url", "ring_url", "hangup_url", "machine_detection_url")}
        for name, value in urls.items():
            if value is not None and not str(value).startswith(("http://", "https://")):
                return _error(400, f"{name} is not a valid URL: {value}")
        try:
            ring_timeout = int(body.get("ring_timeout", 120))
            time_limit = int(body["time_limit"]) if body.get("time_limit") else None
        except (TypeError, ValueError):
            return _error(400, "ring_timeout and time_limit must be whole numbers")
        digits = _digits(to)
        call = EmuCall(call_uuid=str(uuid.uuid4()), request_uuid=str(uuid.uuid4()), to=digits,
                       from_=_digits(from_), direction="outbound",
                       callee=self.callee_for(digits),
                       answer=Fetch(str(body["answer_url"]), str(body.get("answer_method", "POST")).upper(),
                                    {"Event": "StartApp"}, "voice"),
                       hangup_url=urls["hangup_url"], ring_url=urls["ring_url"],
                       machine_url=urls["machine_detection_url"], ring_timeout=ring_timeout,
                       time_limit=time_limit, send_digits=body.get("send_digits") or None,
                       machine=str(body.get("machine_detection", "")).lower() in ("true", "hangup"))
        call.note(self.now(), "rest", {"create": body})
        self._launch(call)
        return _json(201, {"api_id": _api_id(), "message": "call fired", "request_uuid": call.request_uuid})

    async def _transfer(self, request: Any) -> Any:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        call = self.calls.get(request.match_info["uuid"])
        if call is None or not call.live or call.call_uuid != request.match_info["uuid"]:
            return _error(404, "call not found")
        body = await _json_body(request)
        if body is None:
            return _error(400, "request body is not valid JSON")
        legs, url = body.get("legs"), body.get("aleg_url")
        if legs not in ("aleg", "both") or not url:
            return _error(400, "legs must be aleg (or both) with an aleg_url")
        if call.answered_at is None:
            return _error(400, "call is not in progress: cannot transfer")
        call.note(self.now(), "rest", {"transfer": url})
        CallRunner(self, call).replace(Fetch(str(url), str(body.get("aleg_method", "POST")).upper(), {},
                                             "transfer"))
        return _json(202, {"api_id": _api_id(), "message": "call transferred"})

    async def _hangup(self, request: Any) -> Any:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        call = self.calls.get(request.match_info["uuid"])
        if call is None or not call.live or call.call_uuid != request.match_info["uuid"]:
            return _error(404, "call not found")
        call.note(self.now(), "rest", {"hangup": call.call_uuid})
        if call.answered_at is not None:
            CallRunner(self, call).end("completed", "NORMAL_CLEARING")
        else:
            CallRunner(self, call).end("cancel", "ORIGINATOR_CANCEL")
        return _no_content()

    async def _cancel(self, request: Any) -> Any:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        call = self.calls.get(request.match_info["uuid"])
        if (call is None or not call.live or call.answered_at is not None
                or call.request_uuid != request.match_info["uuid"]):
            return _error(404, "request not found")
        call.note(self.now(), "rest", {"cancel": call.request_uuid})
        CallRunner(self, call).end("cancel", "ORIGINATOR_CANCEL")
        return _no_content()

    async def _get(self, request: Any) -> Any:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        call = self.calls.get(request.match_info["uuid"])
        if call is None or call.call_uuid != request.match_info["uuid"]:
            return _error(404, "call not found")
        return _json(200, self._call_json(call))

    def _refuse(self, request: Any) -> Any:
        """HTTP Basic auth against the account, then any injected failure."""
        self.requests.append((request.method, request.path))
        user, password = basic_auth(request.headers.get("Authorization", ""))
        if (user != self.auth_id or not secrets.compare_digest(password, self._token)
                or request.match_info["auth_id"] != self.auth_id):
            return _error(401, "authentication failed")
        failure = self._injected_failure()
        return None if failure is None else _error(*failure)

    def _launch(self, call: EmuCall) -> None:
        self.calls[call.call_uuid] = self.calls[call.request_uuid] = call
        self._tasks[call.call_uuid] = asyncio.create_task(CallRunner(self, call).run())

    def _call_json(self, call: EmuCall) -> dict[str, Any]:
        return {"api_id": _api_id(), "call_uuid": call.call_uuid, "request_uuid": call.request_uuid,
                "call_status": call.status, "direction": call.direction, "from": call.from_, "to": call.to,
                "hangup_cause_name": call.hangup_cause or None}


def _digits(number: str) -> str:
    return number[1:] if number.startswith("+") else number


def _possible(number: str) -> bool:
    """Digits with a country code (a '+' tolerated), plausible for that country; or a SIP URI."""
    import phonenumbers

    if number.startswith("sip:"):
        return True
    if not _NUMBER.match(number):
        return False
    try:
        return bool(phonenumbers.is_possible_number(phonenumbers.parse("+" + _digits(number))))
    except phonenumbers.NumberParseException:
        return False


async def _json_body(request: Any) -> dict[str, Any] | None:
    raw = await request.read()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _api_id() -> str:
    return str(uuid.uuid4())


def _json(status: int, body: dict[str, Any]) -> Any:
    from aiohttp import web

    return web.json_response(body, status=status)


def _no_content() -> Any:
    from aiohttp import web

    return web.Response(status=204)


def _error(status: int, message: str) -> Any:
    return _json(status, {"api_id": _api_id(), "error": message})
