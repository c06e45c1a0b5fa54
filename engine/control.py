"""The control listener (DESIGN §4, §8): JSON-RPC 2.0 at ``POST /rpc`` behind a
bearer token, ``GET /healthz`` (no token) and ``GET /metrics`` (token).

It binds ``control.bind:control.port``, never the webhook port, which may be
tunnelled to the internet. A missing or wrong token is HTTP 401 before the
body is read. JSON-RPC errors travel with HTTP 200; an error the runtime
raises on purpose keeps its stable code and slug, anything else becomes
-32603 with a generic message and a logged traceback.
"""

from __future__ import annotations

import asyncio
import difflib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .client import load_or_create_token
from .errors import InvalidParams, ProviderError, RpcError, VoiceCallError

if TYPE_CHECKING:
    from .runtime import VoiceCallRuntime

log = logging.getLogger("voicecall.control")

MAX_BODY = 64 * 1024
MAX_BATCH = 32
OPERATION_TTL_S = 600.0          # finished continue.start results are kept this long for polling
MAX_OPERATIONS = 256
TURN_SAMPLE_S = 1.0
REQUEST_KEYS = frozenset({"jsonrpc", "method", "params", "id"})

# name -> (accepted types, required). ``None`` for an optional param counts as absent.
Spec = dict[str, tuple[type | tuple[type, ...], bool]]
_CALL: Spec = {"callId": (str, True)}
_SAY: Spec = {"callId": (str, True), "message": (str, True)}
# sessionKey/requesterSessionKey: OpenClaw gateway keys, accepted so its clients work; not used here.
_PLACE: Spec = {"to": (str, False), "message": (str, True), "mode": (str, False), "flow": (str, False),
                "vars": (dict, False), "dtmfSequence": (str, False), "sessionKey": (str, False),
                "requesterSessionKey": (str, False)}


class ProtocolError(Exception):
    """A JSON-RPC protocol error (-32700, -32600, -32601)."""

    def __init__(self, code: int, message: str, reason: str):
        super().__init__(message)
        self.rpc_code = code
        self.reason = reason


def check_params(method: str, raw: dict[str, Any], spec: Spec) -> dict[str, Any]:
    """Unknown, missing or wrong-typed params are -32602, naming each problem."""
    problems = [f"unknown param {k!r}" + _suggest(k, spec) for k in raw if k not in spec]
    out: dict[str, Any] = {}
    for name, (types, required) in spec.items():
        value = raw.get(name)
        if value is None:
            if required:
                problems.append(f"{name!r} is required")
            continue
        if not isinstance(value, types) or isinstance(value, bool):
            want = "an object" if types is dict else "a string"
            problems.append(f"{name!r} must be {want}, got {type(value).__name__}")
        elif isinstance(value, str) and required and not value.strip():
            problems.append(f"{name!r} must not be empty")
        else:
            out[name] = value
    if problems:
        raise InvalidParams(f"invalid params for {method}: " + "; ".join(problems))
    return out


def _suggest(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass
class Operation:
    task: asyncio.Task[str]
    finished_at: float | None = None


class RuntimeMetrics:
    """``GET /metrics``: a per-server registry. Calls by state, webhooks by
    result and signature failures are read from the runtime at scrape time (a
    custom collector); turn latencies are fed into real histograms from each
    live call's ``record.metrics`` (``lastTurnLatencyMs``, ``lastListenWaitMs``)
    once per completed turn."""

    BUCKETS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 30.0)

    def __init__(self, runtime: VoiceCallRuntime):
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.runtime = runtime
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(self)
        self.turn_latency = Histogram("voicecall_turn_latency_seconds", "From the caller's last word to the "
                                      "start of the reply", buckets=self.BUCKETS, registry=self.registry)
        self.listen_wait = Histogram("voicecall_listen_wait_seconds", "From the end of the reply to the "
                                     "caller's first word", buckets=self.BUCKETS, registry=self.registry)
        self.rpc_requests = Counter("voicecall_rpc_requests", "Control RPC requests by method and outcome",
                                    ["method", "outcome"], registry=self.registry)
        self._seen_turns: dict[str, tuple[Any, Any]] = {}

    def rpc(self, method: str, outcome: str) -> None:
        self.rpc_requests.labels(method, outcome).inc()

    def observe_turns(self) -> None:
        """Observe each live call's newest turn once; forget calls that ended.

        The engine overwrites ``lastTurnLatencyMs``/``lastListenWaitMs`` when a
        turn's reply goes out (after ``turnCount`` moved on), so a new turn is
        a change of those values, not of the count."""
        sessions = self.runtime.sessions
        for call_id, s in list(sessions.items()):
            metrics = s.record.metrics
            latency, wait = metrics.get("lastTurnLatencyMs"), metrics.get("lastListenWaitMs")
            if not isinstance(latency, int | float) or self._seen_turns.get(call_id) == (latency, wait):
                continue
            self._seen_turns[call_id] = (latency, wait)
            self.turn_latency.observe(float(latency) / 1000)
            if isinstance(wait, int | float):
                self.listen_wait.observe(float(wait) / 1000)
        for call_id in [c for c in self._seen_turns if c not in sessions]:
            del self._seen_turns[call_id]

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        sessions = list(self.runtime.sessions.values())
        by_state = GaugeMetricFamily("voicecall_calls", "Live calls by state", labels=["state"])
        for state in sorted({s.record.state for s in sessions}):
            by_state.add_metric([state], sum(1 for s in sessions if s.record.state == state))
        yield by_state
        yield GaugeMetricFamily("voicecall_active_calls", "Live calls", value=len(sessions))
        counters = dict(getattr(getattr(self.runtime, "_webhook", None), "counters", None) or {})
        hooks = CounterMetricFamily("voicecall_webhooks", "Webhook requests by result", labels=["result"])
        for result, count in sorted(counters.items()):
            hooks.add_metric([result], count)
        yield hooks
        yield CounterMetricFamily("voicecall_webhook_signature_failures", "Webhooks refused for a bad signature",
                                  value=counters.get("bad_signature", 0))

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        self.observe_turns()
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class ControlServer:
    """``port = await ControlServer(runtime).start()``; ``await server.stop()``."""

    def __init__(self, runtime: VoiceCallRuntime):
        self.runtime = runtime
        self.token = ""
        self.metrics = RuntimeMetrics(runtime)
        self._runner: web.AppRunner | None = None
        self._ops: dict[str, Operation] = {}
        self._sampler: asyncio.Task[None] | None = None
        Handler = Callable[[dict[str, Any]], Awaitable[Any]]
        self.methods: dict[str, tuple[Spec, Handler]] = {
            "voicecall.initiate": (_PLACE, self._initiate),
            "voicecall.start": ({**_PLACE, "to": (str, True), "message": (str, False)}, self._initiate),
            "voicecall.continue": (_SAY, self._continue),
            "voicecall.continue.start": (_SAY, self._continue_start),
            "voicecall.continue.result": ({"operationId": (str, True)}, self._continue_result),
            "voicecall.speak": (_SAY, self._speak),
            "voicecall.dtmf": ({"callId": (str, True), "digits": (str, True)}, self._dtmf),
            "voicecall.end": (_CALL, self._end),
            "voicecall.status": ({"callId": (str, False)}, self._status),
        }

    async def start(self) -> int:
        settings = self.runtime.settings
        self.token = load_or_create_token(settings)
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/rpc", self._handle_rpc)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2)
        await self._runner.setup()
        bind = str(settings.get("control.bind", "127.0.0.1"))
        port = int(settings.get("control.port", 3335))
        await web.TCPSite(self._runner, bind, port).start()
        bound = int(self._runner.addresses[0][1]) if self._runner.addresses else port
        self._sampler = asyncio.create_task(self._sample_turns(), name="control metrics")
        log.info("control listener on %s:%d", bind, bound)
        return bound

    async def _sample_turns(self) -> None:
        # Turns are read from live records; sampling between scrapes keeps the
        # last turn of a call that ends before the next scrape.
        while True:
            await asyncio.sleep(TURN_SAMPLE_S)
            self.metrics.observe_turns()

    async def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            self._sampler = None
        for op in self._ops.values():
            op.task.cancel()
        if self._ops:
            await asyncio.gather(*(op.task for op in self._ops.values()), return_exceptions=True)
        self._ops.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------ HTTP

    def _authorised(self, request: web.Request) -> bool:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        # compare_digest runs in time independent of where the strings differ.
        ok = hmac.compare_digest(given.strip().encode(), self.token.encode())
        return scheme.lower() == "bearer" and ok

    @staticmethod
    def _unauthorised() -> web.Response:
        return web.json_response(
            {"error": "unauthorized", "message": "missing or wrong bearer token; send "
             "'Authorization: Bearer <token>' with control.token or the <store>/control.token of this serve"},
            status=401, headers={"WWW-Authenticate": 'Bearer realm="voicecall"'})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "provider": self.runtime.settings.provider,
                                  "activeCalls": len(self.runtime.sessions)})

    async def _metrics(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._unauthorised()
        body, content_type = self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _handle_rpc(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._unauthorised()
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.json_response({"error": "body_too_large",
                                      "message": f"request body over {MAX_BODY} bytes"}, status=413)
        try:
            doc = json.loads(body)
        except ValueError as exc:   # includes UnicodeDecodeError
            return self._json(_error(None, -32700, f"parse error: the body is not JSON ({exc})", "parse_error"))
        if isinstance(doc, list):
            if not doc:
                return self._json(_error(None, -32600, "invalid request: empty batch", "invalid_request"))
            if len(doc) > MAX_BATCH:
                return self._json(_error(None, -32600, f"invalid request: a batch holds at most {MAX_BATCH} "
                                         "requests", "invalid_request"))
            replies = [r for r in await asyncio.gather(*(self._one(m) for m in doc)) if r is not None]
            return self._json(replies) if replies else web.Response(status=204)
        reply = await self._one(doc)
        return self._json(reply) if reply is not None else web.Response(status=204)

    @staticmethod
    def _json(doc: Any) -> web.Response:
        return web.Response(text=json.dumps(doc, default=str), content_type="application/json")

    # ------------------------------------------------------------ JSON-RPC

    async def _one(self, msg: Any) -> dict[str, Any] | None:
        """One request → its response (None for a notification)."""
        request_id: Any = None
        notification = False
        method = "?"
        try:
            if not isinstance(msg, dict):
                raise ProtocolError(-32600, "invalid request: expected a JSON object", "invalid_request")
            request_id = msg.get("id")
            if isinstance(request_id, bool) or not isinstance(request_id, str | int | type(None)):
                request_id = None
                raise ProtocolError(-32600, "invalid request: id must be a string, an integer or null",
                                    "invalid_request")
            if msg.get("jsonrpc") != "2.0":
                raise ProtocolError(-32600, 'invalid request: "jsonrpc" must be "2.0"', "invalid_request")
            if extra := sorted(set(msg) - REQUEST_KEYS):
                raise ProtocolError(-32600, f"invalid request: unknown member(s) {', '.join(extra)}",
                                    "invalid_request")
            if not isinstance(msg.get("method"), str):
                raise ProtocolError(-32600, 'invalid request: "method" must be a string', "invalid_request")
            notification = "id" not in msg
            method = msg["method"]
            entry = self.methods.get(method)
            if entry is None:
                raise ProtocolError(-32601, f"unknown method {method!r}{_suggest(method, self.methods)}; "
                                    f"methods: {', '.join(self.methods)}", "method_not_found")
            params = msg.get("params", {})
            if isinstance(params, list):
                raise InvalidParams(f"params of {method} must be an object of named params, not an array")
            if not isinstance(params, dict):
                raise ProtocolError(-32600, 'invalid request: "params" must be an object', "invalid_request")
            spec, handler = entry
            result = await handler(check_params(method, params, spec))
            self.metrics.rpc(method, "ok")
            return None if notification else {"jsonrpc": "2.0", "id": request_id, "result": result}
        except ProtocolError as exc:
            self.metrics.rpc(method if method in self.methods else "unknown", exc.reason)
            return None if notification else _error(request_id, exc.rpc_code, str(exc), exc.reason)
        except Exception as exc:
            reply = _from_exception(request_id, method, exc)
            self.metrics.rpc(method, reply["error"]["data"]["reason"])
            return None if notification else reply

    # ------------------------------------------------------------ methods

    async def _initiate(self, p: dict[str, Any]) -> dict[str, Any]:
        call_id = await self.runtime.initiate(to=p.get("to"), message=p.get("message"), mode=p.get("mode"),
                                              flow=p.get("flow"), vars=p.get("vars"),
                                              dtmf_sequence=p.get("dtmfSequence"))
        return {"callId": call_id}

    async def _continue(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"transcript": await self.runtime.continue_(p["callId"], p["message"])}

    async def _continue_start(self, p: dict[str, Any]) -> dict[str, Any]:
        self._prune()
        if len(self._ops) >= MAX_OPERATIONS:
            raise RpcError(f"too many continue operations pending ({MAX_OPERATIONS}); poll or wait for them")
        task = asyncio.create_task(self.runtime.continue_(p["callId"], p["message"]), name="rpc continue")
        await asyncio.sleep(0)   # let it run to its first wait: a bad call id fails here, at once
        if task.done() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
        op_id = secrets.token_urlsafe(12)
        op = self._ops[op_id] = Operation(task)
        task.add_done_callback(lambda _t: setattr(op, "finished_at", time.monotonic()))
        return {"operationId": op_id}

    async def _continue_result(self, p: dict[str, Any]) -> dict[str, Any]:
        self._prune()
        op = self._ops.get(p["operationId"])
        if op is None:
            raise InvalidParams(f"unknown operationId {p['operationId']!r} (results are kept "
                                f"{OPERATION_TTL_S:g} s after the turn ends)")
        if not op.task.done():
            return {"status": "pending"}
        if op.task.cancelled():
            raise RpcError("the operation was cancelled (the server is stopping)")
        exc = op.task.exception()
        if exc is not None:
            raise exc
        return {"status": "done", "transcript": op.task.result()}

    def _prune(self) -> None:
        now = time.monotonic()
        for op_id, op in list(self._ops.items()):
            if op.finished_at is not None and now - op.finished_at > OPERATION_TTL_S:
                if not op.task.cancelled():
                    op.task.exception()   # never polled: mark its failure as seen
                del self._ops[op_id]

    async def _speak(self, p: dict[str, Any]) -> dict[str, Any]:
        await self.runtime.speak(p["callId"], p["message"])
        return {"ok": True}

    async def _dtmf(self, p: dict[str, Any]) -> dict[str, Any]:
        await self.runtime.dtmf(p["callId"], p["digits"])
        return {"ok": True}

    async def _end(self, p: dict[str, Any]) -> dict[str, Any]:
        await self.runtime.end(p["callId"])
        return {"ok": True}

    async def _status(self, p: dict[str, Any]) -> dict[str, Any]:
        return await self.runtime.status(p.get("callId"))


def _error(request_id: Any, code: int, message: str, reason: str, **data: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id,
            "error": {"code": code, "message": message, "data": {**data, "reason": reason}}}


def _from_exception(request_id: Any, method: str, exc: Exception) -> dict[str, Any]:
    """Errors raised on purpose keep their code and slug; anything else is -32603."""
    if isinstance(exc, RpcError):
        data = dict(exc.data)
        if "reason" in data:   # e.g. CallEnded(reason=<end reason>): data.reason is the slug
            data["endReason" if exc.code == "call_ended" else "detail"] = data.pop("reason")
        return _error(request_id, exc.rpc_code, str(exc), exc.code, **data)
    if isinstance(exc, ProviderError):
        return _error(request_id, -32005, f"carrier error: {exc}", "carrier_error", provider=exc.provider)
    if isinstance(exc, VoiceCallError):
        log.warning("%s failed: %s", method, exc)
        return _error(request_id, -32603, str(exc), exc.code)
    log.error("%s failed unexpectedly", method, exc_info=exc)
    return _error(request_id, -32603, "internal error; the serve log has the details", "internal_error")
