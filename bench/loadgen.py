"""The load generator: plays Twilio against a webhook server in another process.

Open loop (``open_loop``): request i is due at ``start + i / rate`` whatever
happened before, and its latency counts from that due time, so a server that
stalls is charged for the queue it causes (no coordinated omission).
Closed loop (``closed_loop``): ``concurrency`` workers send back to back for a
while; requests per second at saturation.

Every request is signed as Twilio signs it (the SDK's ``RequestValidator``)
and differs from every other (replay protection), except in the ``replay``
shape, which re-sends one request on purpose.
"""

from __future__ import annotations

import asyncio
import html
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from bench.servers import ACCOUNT_SID, AUTH_TOKEN

_ACTION = re.compile(r'<Gather[^>]* action="([^"]+)"')


@dataclass
class Result:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    late_ms: float = 0.0          # worst generator lag behind the schedule (open loop)
    cpu_us: float = 0.0           # the server's CPU time per request, when measured

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    @property
    def errors(self) -> int:
        return sum(v for k, v in self.statuses.items() if k != 200)

    @property
    def rps(self) -> float:
        return len(self.latencies_ms) / self.elapsed_s if self.elapsed_s else 0.0


@dataclass
class Call:
    call_id: str
    sid: str
    gather_url: str


class Requests:
    """Builds signed Twilio webhook requests for one server's live calls.

    ``shape``: ``status`` (a late ``in-progress`` status callback with a unique
    SequenceNumber), ``gather`` (a speech result carrying the call's current
    turn token; the token for the next turn is read from the TwiML reply, as
    Twilio would follow it), ``replay`` (one status callback sent again and
    again). With ``fixed`` (the baseline) nothing is read back from replies.
    """

    def __init__(self, url: str, calls: list[dict[str, Any]], shape: str, *, fixed: bool = False):
        from twilio.request_validator import RequestValidator

        self.url, self.shape, self.fixed = url, shape, fixed
        self.validator = RequestValidator(AUTH_TOKEN)
        if not calls:        # the baseline has no calls: invent ids, it never looks at them
            calls = [{"callId": f"call-{i}", "sid": f"CA{i:032x}", "token": "t"} for i in range(64)]
        self.calls = [Call(c["callId"], c["sid"],
                           f"{url}?{urlencode({'callId': c['callId'], 'type': 'gather', 'token': c['token']})}")
                      for c in calls]
        self.idle: deque[Call] = deque(self.calls)
        self.seq = 0
        self._replay: tuple[str, bytes, dict[str, str]] | None = None
        self.last_bad = ""

    def _signed(self, url: str, params: dict[str, str]) -> tuple[str, bytes, dict[str, str]]:
        headers = {"X-Twilio-Signature": self.validator.compute_signature(url, params),
                   "Content-Type": "application/x-www-form-urlencoded"}
        return url, urlencode(params).encode(), headers

    def _status(self) -> tuple[str, bytes, dict[str, str]]:
        self.seq += 1
        call = self.calls[self.seq % len(self.calls)]
        url = f"{self.url}?{urlencode({'callId': call.call_id, 'type': 'status'})}"
        params = {"AccountSid": ACCOUNT_SID, "ApiVersion": "2010-04-01", "CallSid": call.sid,
                  "CallStatus": "in-progress", "Direction": "outbound-api", "From": "+15005550006",
                  "To": "+15550001111", "SequenceNumber": str(1000 + self.seq),
                  "CallbackSource": "call-progress-events"}
        return self._signed(url, params)

    def take(self) -> tuple[tuple[str, bytes, dict[str, str]], Call | None] | None:
        """The next request and the call it holds (None when every call is busy)."""
        if self.shape == "status":
            return self._status(), None
        if self.shape == "replay":
            if self._replay is None:
                self._replay = self._status()
            return self._replay, None
        if not self.idle:
            return None
        call = self.idle.popleft()
        self.seq += 1
        params = {"AccountSid": ACCOUNT_SID, "ApiVersion": "2010-04-01", "CallSid": call.sid,
                  "SpeechResult": f"hello number {self.seq}", "Confidence": "0.93"}
        return self._signed(call.gather_url, params), call

    def give_back(self, call: Call | None, body: str) -> bool:
        """Return the call to the idle pool with its next turn's URL; False (and the
        call retired) when the reply held no gather: the turn went wrong."""
        if call is None:
            return True
        if not self.fixed:
            actions = _ACTION.findall(body)
            if not actions:
                self.last_bad = body
                return False
            call.gather_url = html.unescape(actions[-1])    # the document's last gather is the open one
        self.idle.append(call)
        return True


async def _send(session: Any, reqs: Requests, result: Result, due: float | None) -> None:
    from yarl import URL

    taken = reqs.take()
    if taken is None:
        result.statuses[-1] = result.statuses.get(-1, 0) + 1      # no idle call: generator-side miss
        await asyncio.sleep(0.001)
        return
    (url, body, headers), call = taken
    start = due if due is not None else time.perf_counter()
    text = ""
    try:
        async with session.post(URL(url, encoded=True), data=body, headers=headers) as resp:
            text = await resp.text()
            status = resp.status
    except Exception:       # connection refused / reset: counted, never fatal to the run
        status = 0
    result.latencies_ms.append((time.perf_counter() - start) * 1000)
    result.statuses[status] = result.statuses.get(status, 0) + 1
    if status == 200:
        if not reqs.give_back(call, text):
            result.statuses[-2] = result.statuses.get(-2, 0) + 1      # 200 but no next gather
    elif call is not None:
        reqs.idle.append(call)     # the token was not consumed; try the call again later


def _session(concurrency: int) -> Any:
    import aiohttp

    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency, force_close=False),
                                 timeout=aiohttp.ClientTimeout(total=20))


async def open_loop(reqs: Requests, rate: float, duration_s: float) -> Result:
    result = Result()
    total = int(rate * duration_s)
    async with _session(256) as session:
        tasks: list[asyncio.Task[None]] = []
        begin = time.perf_counter() + 0.02
        for i in range(total):
            due = begin + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                result.late_ms = max(result.late_ms, -delay * 1000)
            tasks.append(asyncio.ensure_future(_send(session, reqs, result, due)))
        await asyncio.gather(*tasks)
        result.elapsed_s = time.perf_counter() - begin
    return result


async def closed_loop(reqs: Requests, concurrency: int, duration_s: float) -> Result:
    result = Result()
    async with _session(concurrency) as session:
        stop_at = time.perf_counter() + duration_s

        async def worker() -> None:
            while time.perf_counter() < stop_at:
                await _send(session, reqs, result, None)

        begin = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.elapsed_s = time.perf_counter() - begin
    return result


def run(coro_factory: Callable[[], Awaitable[Result]]) -> Result:
    return asyncio.run(coro_factory())  # type: ignore[arg-type]
