"""The clock is injected: production uses the event loop's time, tests and
simulations use virtual time that jumps straight to the next due timer."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock epoch seconds (for records)."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class RealClock:
    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class VirtualClock:
    """Time advances only when every task is waiting on this clock.

    ``run_until_idle`` lets the loop settle, then jumps to the earliest sleeper.
    Real I/O (loopback HTTP) still happens in real time; virtual sleeps cost none.
    """

    def __init__(self, start: float = 1_800_000_000.0):
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + max(0.0, seconds), next(self._seq), fut))
        await fut

    def advance_to_next(self) -> bool:
        """Wake the earliest sleeper(s); False when nobody sleeps."""
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
        if not self._sleepers:
            return False
        due = self._sleepers[0][0]
        self._now = max(self._now, due)
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)
        return True

    @property
    def pending(self) -> int:
        return sum(1 for *_, f in self._sleepers if not f.done())


class ScaledClock:
    """Real time running ``1/scale`` times faster: a 10 s pause takes
    ``10 * scale`` real seconds. Simulations, the demo and end-to-end tests
    share one instance between the runtime and the carrier."""

    def __init__(self, scale: float = 0.01, start: float | None = None):
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale!r}")
        self.scale = scale
        self._start = time.time() if start is None else start
        self._t0 = time.monotonic()

    def now(self) -> float:
        return self._start + (time.monotonic() - self._t0) / self.scale

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) * self.scale)
