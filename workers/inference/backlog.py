"""How many requests the vLLM engine holds at once (``Settings.engine_backlog``); the rest wait here.

A GPU worker's task threads bring requests in batches of any size (a source's first page alone, full
batches of 8, single images), so the number of tasks in flight says little about the engine's backlog.
This bounds it in requests: a request takes a place before its image is preprocessed and handed to the
engine, and gives it back when its output is in (thinking-budget resume included, so a request never
waits for a place it already holds). Waiting requests keep only what their task fetched (decoded page
images), not the engine's pixel patches.

Places are given in arrival order (asyncio's semaphore is FIFO), so the oldest batch goes first. A
request of a cancelled job that is still waiting is dropped when its turn comes (``cancel``): vLLM's
abort reaches only the requests inside the engine. Everything here runs on the engine's event loop.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager


class Backlog:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the engine must hold at least one request, not {limit}")
        self.limit = limit
        self._places = asyncio.Semaphore(limit)
        self._waiting: Counter[str] = Counter()  # request id -> its requests waiting for a place
        self._cancelled: set[str] = set()
        self.inside = 0

    @property
    def waiting(self) -> int:
        return sum(self._waiting.values())

    @asynccontextmanager
    async def place(self, request_id: str) -> AsyncIterator[bool]:
        """Hold a place while the block runs; it gets False (and should do nothing) when the request
        was cancelled while it waited."""
        self._waiting[request_id] += 1
        try:
            await self._places.acquire()
        finally:
            self._waiting[request_id] -= 1
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
            self._places.release()

    def cancel(self, request_ids: Iterable[str]) -> int:
        """Drop these requests if they are waiting (their job stopped); returns how many were."""
        ids = [r for r in request_ids if r in self._waiting]
        self._cancelled.update(ids)
        return sum(self._waiting[r] for r in ids)
