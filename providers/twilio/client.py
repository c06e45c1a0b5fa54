"""Twilio REST Calls API through the official SDK (async client), with time-outs,
retries only where a repeat is harmless, and errors a person can act on.

The SDK is imported lazily (it is heavy). ``apiBaseUrl`` replaces the API
host (``Domain.base_url``), so the same SDK code talks to a local emulator;
regions use the SDK's own edge/region host rewriting.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from voicecall.engine.errors import ProviderError
from voicecall.providers.common import retrying

log = logging.getLogger("voicecall.providers.twilio")
T = TypeVar("T")

# Twilio region → (edge, region) for the SDK's host rewriting:
# api.dublin.ie1.twilio.com, api.sydney.au1.twilio.com.
REGIONS: dict[str, tuple[str | None, str | None]] = {
    "us1": (None, None),
    "ie1": ("dublin", "ie1"),
    "au1": ("sydney", "au1"),
}
NOT_FOUND = 20404


class TwilioRest:
    """One SDK client per provider; ``close()`` releases its HTTP session."""

    def __init__(self, account_sid: str, auth_token: str, *, region: str = "us1",
                 api_base_url: str | None = None, timeout_s: float = 10.0,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        if region not in REGIONS:
            raise ProviderError(f"unknown Twilio region {region!r} (known: {', '.join(REGIONS)})",
                                provider="twilio")
        self.account_sid = account_sid
        self._token = auth_token
        self._region = region
        self._base = api_base_url.rstrip("/") if api_base_url else None
        self._timeout = timeout_s
        self._sleep = sleep
        self._client: Any = None
        self._http: Any = None

    def _sdk(self) -> Any:
        if self._client is None:
            if not self.account_sid or not self._token:
                raise ProviderError("Twilio accountSid and authToken are required", provider="twilio")
            from twilio.rest import Client

            # Created here, inside the running loop: the HTTP client opens an aiohttp session.
            self._http = _http_client(self._timeout)
            edge, region = (None, None) if self._base else REGIONS[self._region]
            # A non-empty environment keeps the SDK from reading TWILIO_* variables
            # itself: configuration is read once, by the config loader (STYLE §6).
            self._client = Client(self.account_sid, self._token, http_client=self._http,
                                  edge=edge, region=region, environment={"VOICECALL": "1"})
            if self._base:
                self._client.api.base_url = self._base
        return self._client

    async def create(self, **params: Any) -> str:
        """Create a call; returns its SID. Never retried: a repeat could ring twice."""
        client = self._sdk()
        try:
            call = await self._once(lambda: client.calls.create_async(**params), "create call")
        except ProviderError as exc:
            exc.retryable = False
            raise
        return str(call.sid)

    async def update(self, sid: str, *, idempotent: bool = False, **params: Any) -> Any:
        client = self._sdk()
        action = f"update call {sid}"
        call = lambda: client.calls(sid).update_async(**params)  # noqa: E731
        return await (self._retrying(call, action) if idempotent else self._once(call, action))

    async def fetch(self, sid: str) -> Any:
        client = self._sdk()
        return await self._retrying(lambda: client.calls(sid).fetch_async(), f"fetch call {sid}")

    async def close(self) -> None:
        if self._http is not None and self._http.session is not None:
            await self._http.session.close()
        self._http = self._client = None

    async def _once(self, request: Callable[[], Awaitable[T]], action: str) -> T:
        from twilio.base.exceptions import TwilioRestException, TwilioServiceException

        try:
            return await asyncio.wait_for(request(), self._timeout)
        except (TwilioRestException, TwilioServiceException) as exc:
            raise rest_error(exc, action) from None
        except TimeoutError:
            raise ProviderError(f"Twilio did not answer {action} within {self._timeout:g} s",
                                provider="twilio", retryable=True) from None
        except OSError as exc:
            raise ProviderError(f"Twilio {action} failed: {type(exc).__name__}: {exc}",
                                provider="twilio", retryable=True) from None
        except Exception as exc:
            if _is_client_error(exc):
                raise ProviderError(f"Twilio {action} failed: {type(exc).__name__}: {exc}",
                                    provider="twilio", retryable=True) from None
            raise

    async def _retrying(self, request: Callable[[], Awaitable[T]], action: str) -> T:
        """For requests whose repeat changes nothing: 5xx and network failures are retried."""
        return await retrying(lambda: self._once(request, action), self._sleep)


def rest_error(exc: Any, action: str) -> ProviderError:
    """``Twilio error 21211: The 'To' number +1555 is not a valid phone number.``"""
    status = int(getattr(exc, "status", 0) or 0)
    code = getattr(exc, "code", None)
    message = str(getattr(exc, "msg", "") or getattr(exc, "detail", "") or getattr(exc, "title", "") or "")
    message = message.strip() or f"HTTP {status}"
    # The SDK folds 'Unable to create record: ' into msg; the carrier's words are what matter.
    for prefix in ("Unable to create record: ", "Unable to update record: ", "Unable to fetch record: "):
        message = message.removeprefix(prefix)
    label = f"Twilio error {code}" if code else f"Twilio HTTP {status}"
    return ProviderError(f"{label}: {message} ({action})", provider="twilio", status=status,
                         carrier_code=code, retryable=status >= 500 or status == 429)


def _http_client(timeout_s: float) -> Any:
    """The SDK's aiohttp client, sending Basic auth as a header.

    The SDK passes ``aiohttp.BasicAuth``, deprecated since aiohttp 3.14 (a
    DeprecationWarning on every request); the header is the same bytes.
    """
    import base64

    from twilio.http.async_http_client import AsyncTwilioHttpClient

    class HeaderAuthClient(AsyncTwilioHttpClient):
        async def request(self, method: str, url: str, params: Any = None, data: Any = None,
                          headers: dict[str, str] | None = None, auth: tuple[str, str] | None = None,
                          timeout: float | None = None, allow_redirects: bool = False) -> Any:
            headers = dict(headers or {})
            if auth is not None:
                pair = f"{auth[0]}:{auth[1]}".encode()
                headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
            return await super().request(method, url, params=params, data=data, headers=headers, auth=None,
                                         timeout=timeout or timeout_s, allow_redirects=allow_redirects)

    return HeaderAuthClient(timeout=timeout_s)


def _is_client_error(exc: BaseException) -> bool:
    try:
        import aiohttp
    except ImportError:  # pragma: no cover - aiohttp is a dependency
        return False
    return isinstance(exc, aiohttp.ClientError)
