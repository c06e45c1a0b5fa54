"""The webhook listener: thin aiohttp handlers around the shared checks.

Order before any side effect (DESIGN §4): exact path, POST, signature headers
present (401 before the body is read), per-IP in-flight cap, body ≤ 64 KiB
within 5 s, signature, replay, then the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from aiohttp import web

from .errors import SignatureError, VoiceCallError
from .security import (
    InFlightLimiter,
    Rejection,
    ReplayCache,
    SecurityPolicy,
    StoredKeys,
    check_preflight,
    read_body,
    signed_url,
)
from .security import replay_key as make_replay_key

if TYPE_CHECKING:
    from .runtime import VoiceCallRuntime

log = logging.getLogger("voicecall.webhook")


class WebhookServer:
    def __init__(self, runtime: VoiceCallRuntime):
        self.runtime = runtime
        self.policy = SecurityPolicy.from_settings(runtime.settings)
        self.limiter = InFlightLimiter(self.policy.max_in_flight_per_ip)
        self.replays = ReplayCache(clock=runtime.clock.now)
        # Which keys the store may hold, so a fresh request skips the store read.
        # None while it loads from the store (every key then asks the store).
        self.stored: StoredKeys | None = None
        self._accepted_while_loading: list[str] = []
        self._loader: asyncio.Task[None] | None = None
        self.counters: dict[str, int] = {}
        self._runner: web.AppRunner | None = None

    async def start(self) -> int:
        # Loaded in the background (a long-lived store holds millions of keys:
        # seconds of start-up otherwise); until then replays are checked in the store.
        self._loader = asyncio.ensure_future(self._load_stored())
        app = web.Application(client_max_size=self.policy.max_body)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5)
        await self._runner.setup()
        bind = str(self.runtime.settings.get("serve.bind", "127.0.0.1"))
        port = int(self.runtime.settings.get("serve.port", 3334))
        site = web.TCPSite(self._runner, bind, port)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else port

    async def stop(self) -> None:
        if self._loader is not None:
            self._loader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loader
            self._loader = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _count(self, result: str) -> None:
        self.counters[result] = self.counters.get(result, 0) + 1

    async def handle(self, request: web.Request) -> web.StreamResponse:
        peer = request.remote or ""
        provider = self.runtime.provider
        headers = {k.lower(): v for k, v in request.headers.items()}
        if self.policy.skip_signature:
            log.warning("SECURITY: signature verification is OFF (skipSignatureVerification); "
                        "accepting an unauthenticated request from %s", peer)
        try:
            check_preflight(self.policy, self.limiter, method=request.method, raw_path=request.raw_path,
                            headers=headers, peer=peer, required_headers=provider.signature_headers)
        except Rejection as exc:
            return self._reject(exc)
        try:
            return await self._handle(request, headers, peer)
        except Rejection as exc:
            return self._reject(exc)
        finally:
            self.limiter.leave(peer)

    async def _handle(self, request: web.Request, headers: dict[str, str], peer: str) -> web.StreamResponse:
        from voicecall.providers.base import WebhookRequest

        body = await read_body(request.content, declared_length=request.content_length,
                               limit=self.policy.max_body, timeout_s=self.policy.body_timeout_s)
        try:
            url = signed_url(self.policy, scheme=request.scheme, host=request.host, path_qs=request.raw_path,
                             headers=headers, peer=peer)
        except SignatureError as exc:
            raise Rejection.bad_signature(exc, peer) from None
        form: tuple[tuple[str, str], ...] = ()
        if headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            form = tuple(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        req = WebhookRequest(
            method=request.method, url=url, path=request.path, query=tuple(request.query.items()),
            headers=headers, body=body, form=form, peer=peer, received_at=self.runtime.clock.now(),
        )
        provider = self.runtime.provider
        if self.policy.skip_signature:
            key = make_replay_key(provider.name, f"unsigned\n{request.method}\n{url}\n{body.hex()}")
        else:
            try:
                key = make_replay_key(provider.name, provider.verify(req))
            except SignatureError as exc:
                raise Rejection.bad_signature(exc, peer) from None
        fresh = self.replays.check_and_add(key) and not await self._stored(key)
        try:
            reply = await self.runtime.handle_webhook(req, key if fresh else None)
        except Rejection:
            raise
        except VoiceCallError as exc:
            log.warning("bad webhook from %s: %s", peer, exc)
            self._count("bad_request")
            return web.Response(status=400, text=f"{exc}\n")
        self._count("ok" if fresh else "replay")
        return web.Response(status=reply.status, body=reply.body, content_type=reply.content_type.split(";")[0],
                            charset="utf-8" if reply.body else None)

    async def _load_stored(self) -> None:
        # Built on the store's reader thread into a filter nobody else touches;
        # keys accepted meanwhile are added here, on the loop, before it is used.
        loaded = StoredKeys()
        try:
            count = await self.runtime.store.replay_keys(loaded.add)
        except VoiceCallError as exc:
            log.warning("replay keys not loaded (%s); every webhook is checked in the store", exc)
            return
        for key in self._accepted_while_loading:
            loaded.add(key)
        self._accepted_while_loading = []
        self.stored = loaded
        log.debug("replay filter ready: %d stored keys", count)

    async def _stored(self, key: str) -> bool:
        """Whether the store already holds ``key`` (a replay from before a restart,
        or one the in-memory cache forgot); asks the store only when the filter
        cannot rule it out."""
        stored = self.stored
        if stored is None:
            self._accepted_while_loading.append(key)
            return await self.runtime.store.seen(key)
        if key not in stored:
            stored.add(key)
            return False
        return await self.runtime.store.seen(key)

    def _reject(self, exc: Rejection) -> web.Response:
        log.warning("webhook rejected (%s): %s", exc.reason, exc.log_message)
        self._count(exc.reason)
        return web.Response(status=exc.http_status, text=f"{exc.reason}\n", headers=dict(exc.headers))

