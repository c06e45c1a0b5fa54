"""Plivo's Call API through the official SDK, off the event loop, with
time-outs, retries only where a repeat is harmless, and errors a person can
act on.

The SDK (``plivo.RestClient``) is synchronous (``requests``): every call runs
in a worker thread (``asyncio.to_thread``). It is imported lazily.

Pointing it at ``apiBaseUrl``: the SDK has no base-URL option, and
``Client.request`` re-assigns ``base_uri`` from module constants on every
call, so setting that attribute does not stick. Every request does pass
through ``Client.send_request(prepared)`` though, so our subclass rewrites the
prepared request's ``https://api.plivo.com`` prefix there: the SDK still
builds paths, bodies and auth itself. The subclass also drops the SDK's
"voice fallback" (``is_voice_request``): it re-sends any request that got a
5xx — creating a call included — and prints to stdout. We retry ourselves,
and only idempotent requests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from voicecall.engine.errors import ProviderError
from voicecall.providers.common import retrying

log = logging.getLogger("voicecall.providers.plivo")
T = TypeVar("T")



class PlivoRest:
    """One SDK client per provider; ``close()`` releases its HTTP sessions."""

    def __init__(self, auth_id: str, auth_token: str, *, api_base_url: str | None = None,
                 timeout_s: float = 10.0, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        self.auth_id = auth_id
        self._token = auth_token
        self._base = api_base_url.rstrip("/") if api_base_url else None
        self._timeout = timeout_s
        self._sleep = sleep
        self._client: Any = None

    def _sdk(self) -> Any:
        if self._client is None:
            if not self.auth_id or not self._token:
                raise ProviderError("Plivo authId and authToken are required", provider="plivo")
            self._client = _make_client(self.auth_id, self._token, self._base, self._timeout)
        return self._client

    async def create(self, **params: Any) -> str:
        """Place a call; returns its ``request_uuid``. Never retried: a repeat could ring twice."""
        client = self._sdk()
        try:
            response = await self._once(lambda: client.calls.create(**params), "make call")
        except ProviderError as exc:
            exc.retryable = False
            raise
        request_uuid = getattr(response, "request_uuid", None)
        if isinstance(request_uuid, list):        # several destinations: one uuid each
            request_uuid = request_uuid[0] if request_uuid else None
        if not request_uuid:
            raise ProviderError("Plivo accepted the call but returned no request_uuid", provider="plivo")
        return str(request_uuid)

    async def transfer(self, call_uuid: str, url: str) -> None:
        """Move the A leg to ``url`` (POST). Repeating it lands the call on the same URL."""
        client = self._sdk()
        await self._retrying(lambda: client.calls.transfer(call_uuid, legs="aleg", aleg_url=url,
                                                           aleg_method="POST"), f"transfer call {call_uuid}")

    async def hangup(self, call_uuid: str) -> None:
        client = self._sdk()
        await self._retrying(lambda: client.calls.hangup(call_uuid), f"hang up call {call_uuid}")

    async def cancel(self, request_uuid: str) -> None:
        """Cancel a call that is still queued or ringing (``DELETE /Request/{uuid}/``)."""
        client = self._sdk()
        await self._retrying(lambda: client.calls.cancel(request_uuid), f"cancel call request {request_uuid}")

    async def get(self, call_uuid: str) -> Any:
        client = self._sdk()
        return await self._retrying(lambda: client.calls.get(call_uuid), f"get call {call_uuid}")

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(_close, client)

    async def _once(self, request: Callable[[], T], action: str) -> T:
        import plivo.exceptions as px
        import requests

        try:
            return await asyncio.to_thread(request)
        except px.PlivoRestError as exc:
            raise rest_error(exc, action) from None
        except requests.Timeout:
            raise ProviderError(f"Plivo did not answer {action} within {self._timeout:g} s",
                                provider="plivo", retryable=True) from None
        except requests.RequestException as exc:
            raise ProviderError(f"Plivo {action} failed: {type(exc).__name__}: {exc}",
                                provider="plivo", retryable=True) from None

    async def _retrying(self, request: Callable[[], T], action: str) -> T:
        """For requests whose repeat changes nothing: 5xx and network failures are retried."""
        return await retrying(lambda: self._once(request, action), self._sleep)


def rest_error(exc: Any, action: str) -> ProviderError:
    """``Plivo HTTP 400: invalid destination number (make call)``: Plivo's own words."""
    status = getattr(exc, "http_status", None)
    message = str(exc.args[0] if exc.args else exc).strip()
    if isinstance(exc.args[0] if exc.args else None, dict):      # {"error": {...}} shapes
        message = "; ".join(f"{k}: {v}" for k, v in exc.args[0].items())
    label = f"Plivo HTTP {status}" if status else "Plivo refused the request"
    return ProviderError(f"{label}: {message or type(exc).__name__} ({action})", provider="plivo",
                         status=status, carrier_code=type(exc).__name__,
                         retryable=bool(status and (status >= 500 or status == 429)))


def _make_client(auth_id: str, token: str, base: str | None, timeout_s: float) -> Any:
    import plivo
    from plivo.rest import client as sdk

    class Client(plivo.RestClient):
        def request(self, method: str, path: Any = None, data: Any = None, response_type: Any = None,
                    objects_type: Any = None, files: Any = None, **kwargs: Any) -> Any:
            kwargs.pop("is_voice_request", None)     # see the module docstring
            return super().request(method, path, data, response_type, objects_type, files, **kwargs)

        def send_request(self, request: Any, **kwargs: Any) -> Any:
            if base and request.url.startswith(sdk.PLIVO_API):
                request.url = base + request.url[len(sdk.PLIVO_API):]
            return super().send_request(request, **kwargs)

        def process_response(self, method: str, response: Any, response_type: Any = None,
                             objects_type: Any = None) -> Any:
            try:
                return super().process_response(method, response, response_type, objects_type)
            except plivo.exceptions.PlivoRestError as exc:
                exc.http_status = response.status_code      # the SDK keeps only the message
                raise

    try:
        return Client(auth_id, token, timeout=timeout_s)
    except plivo.exceptions.PlivoRestError as exc:      # e.g. an authId that is not MA…/SA…
        raise ProviderError(f"Plivo client: {exc}", provider="plivo") from None


def _close(client: Any) -> None:
    client.session.close()
    client.multipart_session.close()
