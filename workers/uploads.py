"""A source's pages stored (image and text layer to S3) on a small thread pool while prep renders the next
page, so that rendering does not wait for S3 round trips (with S3 itself, tens of milliseconds each, two
a page: most of a page's time). Handed on in page order, only once stored: a unit is never recorded, and
so never sent to the GPU, before its image is in S3.

At most ``ahead`` pages are in flight; a failed upload raises its error (a transient S3 error: the source
is retried, as before) when its turn comes. ``close`` waits for the uploads still going on: none
outlives the prep task (they are content-addressed, so an orphan would be harmless, but a retry of the
same source should not race with it).

A library pool (concurrent.futures) does the threading; this adds only the ordering and the bound.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from threading import Lock

from jobs.work import PreparedUnit

_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = Lock()


def _executor(threads: int) -> ThreadPoolExecutor:
    """One pool per process and size (a prep process stores one source at a time, with one setting)."""
    with _pools_lock:
        if threads not in _pools:
            _pools[threads] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="vlmq-upload")
        return _pools[threads]


class Uploads:
    def __init__(self, ahead: int) -> None:
        self.ahead = ahead
        self._pending: deque[Future[PreparedUnit]] = deque()
        self._failed = False  # an upload failed: no later page is handed on (close waits for them)

    def submit(self, store: Callable[[], PreparedUnit], wait: bool = False) -> Iterator[PreparedUnit]:
        """Store one page: iterate the result (``for unit in uploads.submit(...)``). It yields the
        oldest pages first while ``ahead`` are in flight (waiting for them), starts this one, then
        yields those stored meanwhile, all in page order. ``wait``: this page and those before it are
        all yielded, once stored (the caller needs this page now, not after rendering the next).
        ``ahead`` 0: the page is stored here."""
        if self.ahead == 0:
            yield store()
            return
        yield from self._ready(lambda: len(self._pending) >= self.ahead)
        self._pending.append(_executor(self.ahead).submit(store))
        yield from self._ready(lambda: wait or self._pending[0].done())

    def drain(self) -> Iterator[PreparedUnit]:
        """Every page still in flight, once stored, in order."""
        return self._ready(lambda: True)

    def _ready(self, take: Callable[[], bool]) -> Iterator[PreparedUnit]:
        # A generator, so that the pages before a failed upload are handed on (the caller records
        # them) before that upload's error is raised; the pages after it never are, as when each page
        # was stored before the next was rendered.
        while self._pending and not self._failed and take():
            f = self._pending.popleft()
            self._failed = f.exception() is not None  # waits
            yield f.result()

    def close(self) -> None:
        """Cancel what has not started and wait for the rest (their errors are not raised: the caller
        is already leaving with its own)."""
        while self._pending:
            f = self._pending.popleft()
            if not f.cancel():
                f.exception()  # waits
