"""Telnyx Call Control v2 over aiohttp (no SDK: it is slow to import and not needed).

Every request carries ``Authorization: Bearer <API key>`` and a JSON body. Every
command carries a ``command_id``: a request that failed with a 5xx, a 429 or a
time-out is sent again with the same id, so Telnyx runs it once. Dialing is
never retried (a repeat could ring the callee twice). A 4xx becomes a
ProviderError naming Telnyx's own code, title and detail.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

from voicecall.engine.errors import ProviderError
from voicecall.providers.common import RETRY_DELAYS  # three tries in all

log = logging.getLogger("voicecall.providers.telnyx")

DEFAULT_BASE_URL = "https://api.telnyx.com"
CALL_ENDED_CODE = "90018"           # "Call has already ended"


class TelnyxRest:
    def __init__(self, api_key: str, *, api_base_url: str | None = None, timeout_s: float = 10.0,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 new_id: Callable[[], str] = lambda: str(uuid.uuid4())):
        self._key = api_key
        self.base_url = (api_base_url or DEFAULT_BASE_URL).rstrip("/")
        self._timeout = timeout_s
        self._sleep = sleep
        self._new_id = new_id
        self._session: Any = None

    async def dial(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /v2/calls``; returns the response's ``data`` (with ``call_control_id``)."""
        data = await self._send("/v2/calls", {**body, "command_id": self._new_id()}, "dial", retry=False)
        if not isinstance(data.get("call_control_id"), str) or not data["call_control_id"]:
            raise ProviderError(f"Telnyx answered dial without a call_control_id: {str(data)[:200]}",
                                provider="telnyx")
        return data

    async def command(self, call_control_id: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /v2/calls/{id}/actions/{name}`` with a fresh ``command_id``, retried with the same one."""
        # Call control ids look like ``v3:…``; Telnyx's own SDK sends the colon as is.
        path = f"/v2/calls/{quote(call_control_id, safe=':')}/actions/{name}"
        return await self._send(path, {**body, "command_id": self._new_id()}, name, retry=True)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _send(self, path: str, body: dict[str, Any], action: str, *, retry: bool) -> dict[str, Any]:
        delays = RETRY_DELAYS if retry else ()
        for delay in (*delays, None):
            try:
                return await self._once(path, body, action)
            except ProviderError as exc:
                if not exc.retryable or delay is None:
                    raise
                log.warning("%s; retrying in %.2f s with the same command_id", exc, delay)
                await self._sleep(delay)
        raise AssertionError("unreachable")

    async def _once(self, path: str, body: dict[str, Any], action: str) -> dict[str, Any]:
        import aiohttp

        if not self._key:
            raise ProviderError("telnyx.apiKey is not configured", provider="telnyx")
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout))
        headers = {"Authorization": f"Bearer {self._key}", "Content-Type": "application/json",
                   "Accept": "application/json"}
        try:
            async with self._session.post(self.base_url + path, data=json.dumps(body), headers=headers) as resp:
                status, text = resp.status, await resp.text()
        except TimeoutError:
            raise ProviderError(f"Telnyx did not answer {action} within {self._timeout:g} s",
                                provider="telnyx", retryable=True) from None
        except aiohttp.ClientError as exc:
            raise ProviderError(f"Telnyx {action} failed: {type(exc).__name__}: {exc}",
                                provider="telnyx", retryable=True) from None
        try:
            doc = json.loads(text) if text else {}
        except ValueError:
            doc = None
        if status >= 400:
            raise rest_error(status, doc, text, action)
        if not isinstance(doc, dict):
            raise ProviderError(f"Telnyx answered {action} with a body that is not a JSON object",
                                provider="telnyx", status=status)
        data = doc.get("data")
        return data if isinstance(data, dict) else {}


def rest_error(status: int, doc: Any, text: str, action: str) -> ProviderError:
    """``Telnyx error 10009 (Authentication failed): Could not understand the provided credentials. (dial)``"""
    errors = doc.get("errors") if isinstance(doc, dict) else None
    first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
    code = first.get("code")
    title = str(first.get("title") or "").strip()
    detail = str(first.get("detail") or "").strip()
    if first:
        label = f"Telnyx error {code}" if code else f"Telnyx HTTP {status}"
        words = f"{label} ({title}): {detail}" if title and detail else f"{label}: {title or detail}"
    else:
        words = f"Telnyx HTTP {status}: {text.strip()[:200] or 'no body'}"
    return ProviderError(f"{words} ({action})", provider="telnyx", status=status,
                         carrier_code=str(code) if code is not None else None,
                         retryable=status >= 500 or status == 429)
