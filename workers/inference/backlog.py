"""How many requests the vLLM engine holds at once (``Settings.engine_backlog``); the rest wait here.

A GPU worker's task threads bring requests in batches of any size (a source's first page alone, full
batches of 8, single images), so the number of tasks in flight says little about the engine's backlog.
This bounds it in requests: a request takes a place before its image is preprocessed and handed to the
engine, and gives it back when its output is in (thinking-budget resume included, so a request never
waits for a place it already holds). Waiting requests keep only what their task fetched (decoded page
images), not the engine's pixel patches.

Places are given by priority, then arrival: a request's priority is its claim's turn
(jobs.scheduling.fairness), so a small job's page claimed behind a bulk job's thousands waits here for
the next free place, not for all of them. (vLLM's own queue orders them the same way with its
"priority" scheduling policy, ``model.scheduling_policy``.) A request of a cancelled job that is still
waiting is dropped when its turn comes (``cancel``): vLLM's abort reaches only the requests inside the
engine. Everything here runs on the engine's event loop.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager


class Backlog:
    def __init__(
        self,
        limit: int,
        urgent_below: int = 0,
        overdraft: int = 0,
        on_release: Callable[[], None] | None = None,
    ) -> None:
        """``urgent_below``/``overdraft``: a request whose priority is below ``urgent_below`` finding no
        free place takes one of ``overdraft`` places beyond the limit (workers.inference.gate: urgent
        work claimed while the engine is full). ``on_release``: called when a place is given back."""
        if limit < 1:
            raise ValueError(f"the engine must hold at least one request, not {limit}")
        self.limit = limit
        self._free = limit
        self.urgent_below, self.overdraft, self._over = urgent_below, overdraft, 0
        self._on_release = on_release
        self._queue: list[tuple[int, int, asyncio.Future[None]]] = []  # (priority, arrival, its turn)
        self._arrival = itertools.count()
        self._waiting: Counter[str] = Counter()  # request id -> its requests waiting for a place
        self._cancelled: set[str] = set()
        self.inside = 0
        self._n_waiting = 0  # sum of _waiting (read by the claim gate from other threads)

    @property
    def waiting(self) -> int:
        return self._n_waiting

    @property
    def free(self) -> int:
        """Places not held nor waited for (below 0 while urgent requests overdraw)."""
        return self.limit - self.inside - self.waiting

    @asynccontextmanager
    async def place(self, request_id: str, priority: int = 0) -> AsyncIterator[bool]:
        """Hold a place while the block runs (lower ``priority`` first, then arrival); the block gets
        False (and should do nothing) when the request was cancelled while it waited."""
        self._waiting[request_id] += 1
        self._n_waiting += 1
        try:
            await self._acquire(priority)
        finally:
            self._waiting[request_id] -= 1
            self._n_waiting -= 1
            if not self._waiting[request_id]:
                del self._waiting[request_id]
        go = request_id not in self._cancelled
        if request_id not in self._waiting:
            self._cancelled.discard(request_id)
        self.inside += 1
        try:
            yield go
        finally:
            self.inside -= 1
            self._release()

    async def _acquire(self, priority: int) -> None:
        if self._free and not self._queue:
            self._free -= 1
            return
        if priority < self.urgent_below and self._over < self.overdraft:
            self._over += 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._queue, (priority, next(self._arrival), turn))
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # handed a place, then cancelled: pass it on
                self._release()
            raise

    def _release(self) -> None:
        """Hand the place to the first waiter still waiting (a cancelled one is skipped), or free it.
        An overdrawn place is simply given back."""
        if self._on_release is not None:
            self._on_release()
        if self._over:
            self._over -= 1
            return
        while self._queue:
            _, _, turn = heapq.heappop(self._queue)
            if not turn.done():
                turn.set_result(None)
                return
        self._free += 1

    def cancel(self, request_ids: Iterable[str]) -> int:
        """Drop these requests if they are waiting (their job stopped); returns how many were."""
        ids = [r for r in request_ids if r in self._waiting]
        self._cancelled.update(ids)
        return sum(self._waiting[r] for r in ids)
