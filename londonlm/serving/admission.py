"""Bounded concurrency with a bounded wait queue, for an asyncio server.

At most ``max_concurrency`` generations run; up to ``max_queue`` more wait their turn; anything
beyond is refused at once (the caller answers 503 + Retry-After) so a burst can never pile up
unbounded work or memory. State is only touched from the event loop, so no lock is needed.
"""
from __future__ import annotations

import asyncio
import math
import time
from collections import deque


class Busy(Exception):
    """Refused: the queue is full (or the wait outlived the request's time limit)."""

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Slot:
    """A held concurrency slot; ``release()`` is idempotent so every exit path may call it."""

    def __init__(self, admission: "Admission"):
        self._admission, self._released, self.started = admission, False, time.monotonic()

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._admission._release(time.monotonic() - self.started)


class Admission:
    """FIFO admission with direct hand-off: a finishing request passes its slot straight to the
    oldest waiter, so ``active <= max_concurrency`` and ``waiting <= max_queue`` hold at every
    instant (a semaphore would let a newcomer slip in between release and wake-up)."""

    def __init__(self, max_concurrency: int, max_queue: int):
        if max_concurrency < 1 or max_queue < 0:
            raise ValueError("max_concurrency must be >= 1 and max_queue >= 0")
        self.max_concurrency, self.max_queue = max_concurrency, max_queue
        self._waiters: deque[asyncio.Future] = deque()
        self.active = self.peak_active = self.peak_waiting = 0
        self.completed = self.rejected = 0
        self._mean_s = 1.0  # running estimate of one generation's duration, for Retry-After

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def retry_after(self) -> int:
        backlog = (self.waiting + self.active) / self.max_concurrency
        return max(1, min(120, math.ceil(backlog * self._mean_s)))

    async def acquire(self, timeout_s: float) -> Slot:
        if self.active < self.max_concurrency and not self._waiters:
            self.active += 1
            self.peak_active = max(self.peak_active, self.active)
            return Slot(self)
        if len(self._waiters) >= self.max_queue:
            self.rejected += 1
            raise Busy(f"server busy: {self.active} running and {self.waiting} queued "
                       f"(queue limit {self.max_queue}); retry later", self.retry_after())
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self.peak_waiting = max(self.peak_waiting, len(self._waiters))
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout=max(0.0, timeout_s))
        except BaseException as e:  # timeout, or the client went away while queued
            if fut.done() and not fut.cancelled():
                self._hand_off()  # the slot arrived just as we gave up: pass it on
            else:
                fut.cancel()
                try:
                    self._waiters.remove(fut)
                except ValueError:
                    pass
            if isinstance(e, (TimeoutError, asyncio.TimeoutError)):
                self.rejected += 1
                raise Busy(f"server busy: waited {timeout_s:.0f}s in the queue; retry later",
                           self.retry_after()) from None
            raise
        return Slot(self)  # the releaser handed its slot over: ``active`` already counts us

    def _hand_off(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.active -= 1

    def _release(self, seconds: float) -> None:
        self.completed += 1
        self._mean_s = 0.8 * self._mean_s + 0.2 * seconds
        self._hand_off()

    def stats(self) -> dict:
        return {"active": self.active, "waiting": self.waiting, "max_concurrency": self.max_concurrency,
                "max_queue": self.max_queue, "peak_active": self.peak_active,
                "peak_waiting": self.peak_waiting, "completed": self.completed, "rejected": self.rejected}
