"""Result writers: processes beside a GPU worker that store its batches' results
(``workers.results.finish``: payloads to S3, rows to Postgres, sources and jobs settled).

Why: that work is Python that holds the GIL (boto3, SQLAlchemy, JSON), and in the GPU worker's own
process it competes with vLLM's front end, whose event loop delivers the engine's outputs. When a
job's last requests finish together, the two queue behind each other: on the H200 the worker's process
ran at one core for the last 1.9 s of a 256-page job, after the engine had finished (BENCHMARKS.md,
session 5). Here each batch's storing runs in another process, several at once.

``VLMQ_MODEL__RESULT_WRITERS`` processes (default: 4 for the vLLM engine, none for the others, whose
one task at a time has nothing to compete with). They are spawned, never forked (the GPU worker runs
threads and vLLM), when the worker starts; each builds its own worker context (database pool, S3
client) from the same settings, which it inherits as the environment. Prometheus samples reach the
worker's exporter through its multiprocess directory, as the worker's own do.

A batch goes over as its ``Answered`` records (text and sizes, no images), and the task thread waits
for it, its units' lease renewed by its heartbeat as before. An error in the writer (S3 down, the
database, a bug) comes back as that error, so the units are given back exactly as when the thread
stored them. A writer that dies mid-batch (killed, out of memory) breaks the pool: that batch fails
with ``WriterLost`` (retryable: its units given back, unless already stored in one transaction), and
the next batch gets a new pool. A library pool (concurrent.futures) does the processes; this adds the
spawn context, the warm start and the replacement of a broken pool.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from jobs.adapters.db import as_vlmq_error
from jobs.config import Settings
from jobs.errors import EngineError, WriterLost
from jobs.work import UnitWork
from workers.results import Answered, EngineFacts

log = logging.getLogger(__name__)


class Writers:
    def __init__(self, processes: int) -> None:
        if processes < 1:
            raise ValueError(f"result writers need at least one process, not {processes}")
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                spawn = multiprocessing.get_context("spawn")
                self._pool = ProcessPoolExecutor(
                    self.processes, mp_context=spawn, initializer=_writer_context
                )
            return self._pool

    def start(self) -> list[int]:
        """Start every writer now and wait until each has its context: the worker's start pays for the
        spawn and the imports (about a second), not its first batches. Returns the writers' pids."""
        pool = self._executor()
        answered = {f.result() for f in [pool.submit(_pid) for _ in range(self.processes)]}
        # Every process the pool spawned (one may have answered twice while another was starting):
        # the executor's own table, a private attribute it has kept since Python 3.2.
        return sorted(getattr(pool, "_processes", None) or answered)

    def finish(self, units: Sequence[UnitWork], answered: Sequence[Answered], engine: EngineFacts) -> None:
        """``results.finish`` for the job lane, in a writer; raises what it raised there."""
        pool = self._executor()
        try:  # a pool that lost a process raises at submit; one that loses it now, at result
            future: Future[None] = pool.submit(_finish, list(units), list(answered), engine)
            future.result()
        except BrokenProcessPool as e:
            self._replace(pool)
            raise WriterLost(f"a result writer process died while storing {len(answered)} results") from e

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is broken:
                self._pool = None
        broken.shutdown(wait=False, cancel_futures=True)
        log.warning("result writers lost a process; the next batch starts new ones")

    def shutdown(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


_writers: dict[int, Writers] = {}
_writers_lock = threading.Lock()


def for_settings(settings: Settings) -> Writers | None:
    """The process's writers (None: results are stored by the task threads themselves)."""
    n = settings.result_writers
    if n <= 0:
        return None
    with _writers_lock:
        if n not in _writers:
            _writers[n] = Writers(n)
        return _writers[n]


# --- in the writer process ----------------------------------------------------------------------


def _writer_context() -> None:
    from workers.context import get_context

    get_context()  # database pool and S3 client, once, before the first batch


def _pid() -> int:
    return os.getpid()


def _finish(units: list[UnitWork], answered: list[Answered], engine: EngineFacts) -> None:
    from workers.context import get_context
    from workers.lanes import JobLane
    from workers.results import finish

    ctx = get_context()
    try:
        finish(ctx, JobLane(ctx.service), units, answered, engine)
    except Exception as e:  # as a vlmq error: its class and message cross back to the worker intact
        raise as_vlmq_error(e, EngineError) from None
