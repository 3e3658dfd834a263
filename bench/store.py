"""CPU a GPU worker spends on each page after the engine has answered: the result payload to S3, the
result rows and states to Postgres, the page's source and job settled.

    python -m bench.store [--docs 16] [--per-doc 8] [--repeats 3]

That work runs in the GPU worker's own process, beside vLLM's front end (its event loop delivers the
engine's outputs), and mostly holds the GIL. When a job's last requests finish together, it is the
job's tail: on the H200 (BENCHMARKS.md, session 5) 1.9 s from the engine's last token to the job's
completion, for 256 pages. This measures it on any machine, against real services: a dev stack
(embedded Postgres and Redis, moto's S3 server) is started, PDFs are uploaded through the API and
prepared by the real prep code, and their pages go through ``workers.infer`` with an engine that
answers at once with a 1,024-token-sized text. The process's CPU time (every thread: the payloads are
written from several, ``VLMQ_S3__PUT_CONCURRENCY``) is taken at the engine's answer and at the end of
each batch, one batch at a time: with result writer processes (``VLMQ_MODEL__RESULT_WRITERS=2``,
workers.writers), what is left in the worker's own process. The pages
go in the batches prep itself dispatched (``VLMQ_LIMITS__BATCH_SIZE``, 8, and
``VLMQ_LIMITS__FIRST_CHUNK_PAGES``, 1: each source's first page is a batch of its own).

Prints one Markdown table row for BENCHMARKS.md: CPU ms per page after the engine (median of the
repeats), and for the whole inference task (media fetch and decode included).

    python -m bench.store --tail [--docs 32]

The job's tail itself, in wall time: every batch runs in a task thread of its own, as in the GPU
worker, and the engine answers them all at once (the benchmark's 256 pages of 1,024 tokens end within
a second of each other). Reported: seconds from that answer to the job's completion (the last batch
stored, its sources and the job settled, the output files written), median of the repeats.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import string
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from bench.pages import documents
from workers.inference.engine import GenerationOutput, GenerationRequest
from workers.inference.fake_engine import FakeEngine

# About what GLM-4.1V's tokenizer makes of 1,024 tokens of English: 4 KB, reasoning and answer.
_WORDS = "".join(random.Random(0).choices(string.ascii_lowercase + "     ", k=4096))
TEXT = f"<think>{_WORDS[:2600]}</think><answer>{_WORDS[2600:]}</answer>"


class AnsweringEngine(FakeEngine):
    """Answers at once with a long well-formed text; records the process CPU time at each answer."""

    def __init__(self) -> None:
        super().__init__(latency=0.0)
        self.answered_cpu: list[float] = []

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        outs = [GenerationOutput(r.request_id, TEXT, 1600, 1024, "stop") for r in requests]
        self.answered_cpu.append(time.process_time())
        return outs


class TogetherEngine(AnsweringEngine):
    """Answers only once all ``batches`` callers are waiting, all at once; records when (monotonic)."""

    def __init__(self, batches: int) -> None:
        super().__init__()
        self.answered_at = 0.0
        self._all_in = threading.Barrier(batches, action=self._stamp)

    def _stamp(self) -> None:
        self.answered_at = time.perf_counter()

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        self._all_in.wait(timeout=120)
        return super().generate(requests)


@contextmanager
def _stack() -> Iterator[object]:
    """A dev stack and the worker context on it (the settings read from the stack's env)."""
    from api.cli.devstack import DevStack
    from jobs.config import Settings, get_settings
    from migrations import upgrade
    from workers import context

    state = Path(tempfile.mkdtemp(prefix="vlmq-bench-store-"))
    saved = dict(os.environ)
    try:
        with DevStack(Settings(_env_file=None, state_dir=state), state) as stack:  # type: ignore[call-arg]
            os.environ.update({**stack.start(), "VLMQ_API__KEYS": "bench-key:bench"})
            get_settings.cache_clear()
            context.reset()
            upgrade(os.environ["VLMQ_DB__URL"])
            ctx = context.get_context()
            try:
                yield ctx
            finally:  # its connections, before the stack's Postgres stops
                ctx.service.sessions.kw["bind"].dispose()
    finally:  # the process's settings as they were (a test runs this too)
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()
        context.reset()


class _Recorder:
    """Stands in for the service's dispatcher while prep runs: the inference batches prep sends, kept
    here (in prep's own grouping: each source's first page alone, then full batches) instead of queued."""

    def __init__(self) -> None:
        self.batches: list[list[uuid.UUID]] = []

    def prep(self, item_id: uuid.UUID, priority: str = "normal") -> None:
        raise AssertionError("prep sends no prep messages")

    def infer(self, unit_ids: Sequence[uuid.UUID], priority: str = "normal") -> None:
        self.batches.append(list(unit_ids))


def _batches(ctx: object, docs: int, per_doc: int, seed: int) -> list[list[uuid.UUID]]:
    """Upload and prepare ``docs`` PDFs; their pages in the inference batches prep dispatched."""
    from fastapi.testclient import TestClient
    from sqlalchemy import select

    from api.app import create_app
    from jobs.models import Item
    from workers import prep

    files = [
        ("file", (f"d{i}.pdf", pdf, "application/pdf"))
        for i, pdf in enumerate(documents(docs * per_doc, per_doc, seed))
    ]
    with TestClient(create_app(ctx.settings)) as client:  # type: ignore[attr-defined]
        r = client.post("/v1/jobs", headers={"Authorization": "Bearer bench-key"}, files=files)
        r.raise_for_status()
        job_id = uuid.UUID(r.json()["id"])
    service = ctx.service  # type: ignore[attr-defined]
    with service.sessions() as s:
        sources = list(s.scalars(select(Item.id).where(Item.job_id == job_id, Item.parent_id.is_(None))))
    dispatcher, service.dispatcher = service.dispatcher, _Recorder()
    try:
        for source in sources:
            prep.prepare(ctx, source)  # type: ignore[arg-type]
        return list(service.dispatcher.batches)
    finally:
        service.dispatcher = dispatcher


def run(docs: int, per_doc: int, repeats: int) -> dict[str, float]:
    """``VLMQ_LIMITS__BATCH_SIZE`` and ``..._FIRST_CHUNK_PAGES`` group the pages, as in prep."""
    from workers import infer

    after, whole, wall = [], [], []
    with _stack() as ctx:
        for rep in range(repeats + 1):  # the first round warms up (connections, statement caches)
            batches = _batches(ctx, docs, per_doc, seed=1000 * rep)
            engine = AnsweringEngine()
            spent_after = spent_whole = 0.0
            w0 = time.perf_counter()
            for units in batches:
                c0 = time.process_time()
                infer.infer(ctx, engine, units)  # type: ignore[arg-type]
                c1 = time.process_time()
                spent_whole += c1 - c0
                spent_after += c1 - engine.answered_cpu[-1]
            pages = sum(map(len, batches))
            if rep:
                after.append(1000 * spent_after / pages)
                whole.append(1000 * spent_whole / pages)
                wall.append(1000 * (time.perf_counter() - w0) / pages)
    return {"after_ms": statistics.median(after), "whole_ms": statistics.median(whole), "pages": pages,
            "batches": len(batches), "wall_ms": statistics.median(wall),
            "writers": ctx.settings.result_writers}  # type: ignore[attr-defined]  # fmt: skip


def tail(docs: int, per_doc: int, repeats: int) -> dict[str, float]:
    """Seconds from one answer to every batch at once until the job is completed (see the module)."""
    from concurrent.futures import ThreadPoolExecutor

    from jobs.models import Item, Job
    from workers import infer

    tails: list[float] = []
    with _stack() as ctx:
        for rep in range(repeats + 1):  # the first round warms up
            batches = _batches(ctx, docs, per_doc, seed=1000 * rep)
            engine = TogetherEngine(len(batches))
            with ThreadPoolExecutor(len(batches)) as pool:
                for f in [pool.submit(infer.infer, ctx, engine, units) for units in batches]:  # type: ignore[arg-type]
                    f.result()
            done = time.perf_counter()
            with ctx.service.sessions() as s:  # type: ignore[attr-defined]
                job = s.get(Item, batches[0][0]).job_id
                status = s.get(Job, job).status
            if status != "completed":
                raise RuntimeError(f"the job ended {status}, not completed")
            if rep:
                tails.append(done - engine.answered_at)
    return {"tail_s": statistics.median(tails), "pages": sum(map(len, batches)), "batches": len(batches),
            "writers": ctx.settings.result_writers}  # type: ignore[attr-defined]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=16)
    ap.add_argument("--per-doc", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tail", action="store_true", help="the job's tail in wall time (see the module)")
    a = ap.parse_args()
    if a.tail:
        t = tail(a.docs, a.per_doc, a.repeats)
        print(f"| a job's tail: {t['pages']} pages in {t['batches']} batches answered at once, "
              f"{t['writers']} result writers | **{t['tail_s']:.2f} s** to the job's completion | "
              f"`python -m bench.store --tail --docs {a.docs} --per-doc {a.per_doc}` |")  # fmt: skip
        return
    r = run(a.docs, a.per_doc, a.repeats)
    print(f"| GPU worker's CPU per page after the engine ({r['pages']} pages in {r['batches']} batches, "
          f"{r['writers']} result writers) | **{r['after_ms']:.1f} ms** after the engine; "
          f"{r['whole_ms']:.1f} ms for the whole task; {r['wall_ms']:.1f} ms of wall time, "
          "one batch after another | "
          f"`python -m bench.store --docs {a.docs} --per-doc {a.per_doc}` |")  # fmt: skip


if __name__ == "__main__":
    main()
