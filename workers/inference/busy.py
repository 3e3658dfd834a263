"""How busy the engine is: the share of wall time with at least one request in flight.

The inference code wraps every ``engine.generate`` in :meth:`BusyMeter.running`. With several batches
in flight at once (vLLM task threads) the engine is busy while any one of them runs, so the meter
counts the union of their intervals, not their sum. The fraction is measured over a sliding window
and read at scrape time (workers.metrics); the total busy seconds also feed a counter.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from jobs.adapters.metrics import ENGINE_BUSY_SECONDS


class BusyMeter:
    def __init__(self, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s, self._clock = window_s, clock
        self._lock = threading.Lock()
        self._in_flight = 0
        self._busy_since: float | None = None
        self._spans: deque[tuple[float, float]] = deque()  # closed busy intervals inside the window
        self._started = clock()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @contextmanager
    def running(self, n: int = 1) -> Iterator[None]:
        self._enter(n)
        try:
            yield
        finally:
            self._leave(n)

    def _enter(self, n: int) -> None:
        with self._lock:
            if self._in_flight == 0 and n > 0:
                self._busy_since = self._clock()
            self._in_flight += n

    def _leave(self, n: int) -> None:
        with self._lock:
            self._in_flight -= n
            if self._in_flight == 0 and self._busy_since is not None:
                now = self._clock()
                self._spans.append((self._busy_since, now))
                ENGINE_BUSY_SECONDS.inc(now - self._busy_since)
                self._busy_since = None

    def fraction(self) -> float:
        """Busy time / wall time over the last ``window_s`` seconds (or since start, if shorter)."""
        with self._lock:
            now = self._clock()
            start = max(now - self.window_s, self._started)
            while self._spans and self._spans[0][1] <= start:
                self._spans.popleft()
            spans = [*self._spans, *([(self._busy_since, now)] if self._busy_since is not None else [])]
        busy = sum(end - max(begin, start) for begin, end in spans)
        wall = now - start
        return min(1.0, busy / wall) if wall > 0 else 0.0


ENGINE_METER = BusyMeter()  # the process's engine (one per inference worker process)
