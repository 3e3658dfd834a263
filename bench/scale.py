"""Jobs of millions of items (issue 25): what the Postgres side costs with a job of ``--items`` sources
against the same with fewer. ``python -m bench.scale --items 10000 1000000``.

Each size gets a fresh database on the test Postgres (tests.conftest), migrated to head and dropped at the
end, holding a running job of N images (one page each) built with set-based SQL: 60% succeeded (a current
result each), 1% failed, 64 pages running, the rest up to 80% ready pages, 16 sources preparing, the others
queued; beside it a 1,000-item job of another tenant in the same shape, so a claim has two jobs to share
out. Rows are inserted in their state, not moved there (the status-move trigger only checks moves).
Then it times the service's calls (median and p95 of up to ``--reps``), captures each call's SQL, and
for every call more than 2x slower on the largest job than on the smallest prints EXPLAIN ANALYZE of its
slowest statements. The figures go to ``--out`` as JSON."""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import math
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Engine, delete, event, select, text

from jobs import repository as repo
from jobs import transitions
from jobs.adapters.db import session_factory
from jobs.config import Settings, get_settings
from jobs.models import Item, Job, Wake
from jobs.schemas import JobCreate
from jobs.service import JobService
from jobs.status import ItemStatus
from jobs.sweeper import sweep
from tests.conftest import migrated_database
from tests.fakes import MemoryDispatcher, MemoryStore

JOB = """INSERT INTO jobs (id, tenant, status, prompt, prompt_version, model_id, request_hash, total_items,
  created_at, started_at, expires_at) VALUES (:job, :tenant, 'running', 'Describe the image.', 'caption-v1',
  'm', 'h', :n, now() - make_interval(secs => :age), now() - make_interval(secs => :age),
  now() - make_interval(secs => :age) + interval '1 day')"""
# A source's ordinal g decides its state; a page ends at 20 pages/s up to now, prep ran ahead of it.
SOURCES = """INSERT INTO items (id, job_id, custom_id, kind, uri, status, page_count, error_code, attempts,
  lease_until, created_at, updated_at)
SELECT gen_random_uuid(), j.id, 'img-' || lpad(g::text, 7, '0'), 'source', 's3://bench/in/' || g || '.png',
  CASE WHEN g <= :done THEN 'succeeded' WHEN g <= :failed THEN 'failed' WHEN g <= :ready THEN 'prepared'
       WHEN g <= :ready + 16 THEN 'preparing' ELSE 'queued' END,
  CASE WHEN g <= :ready THEN 1 END, CASE WHEN g > :done AND g <= :failed THEN 'page_failed' END,
  CASE WHEN g <= :ready + 16 THEN 1 ELSE 0 END,
  CASE WHEN g > :ready AND g <= :ready + 16 THEN now() + interval '1 hour' END,
  j.created_at, CASE WHEN g <= :failed THEN now() - make_interval(secs => 0.05 * (:failed - g))
                     ELSE j.created_at + make_interval(secs => (:age - 60) * least(g, :ready) / :n) END
FROM jobs j, generate_series(1, :n) g WHERE j.id = :job"""
UNITS = """INSERT INTO items (id, job_id, parent_id, custom_id, kind, page, media_key, status, error_code,
  error_message, attempts, lease_until, created_at, updated_at)
SELECT gen_random_uuid(), s.job_id, s.id, s.custom_id, 'page', 1, 'media/' || s.id || '.png',
  CASE WHEN g <= :done THEN 'succeeded' WHEN g <= :failed THEN 'failed'
       WHEN g <= :failed + 64 THEN 'running' ELSE 'ready' END,
  CASE WHEN g > :done AND g <= :failed THEN 'engine_error' END,
  CASE WHEN g > :done AND g <= :failed THEN 'the engine failed' END,
  CASE WHEN g <= :done THEN 1 WHEN g <= :failed THEN 3 WHEN g <= :failed + 64 THEN 1 ELSE 0 END,
  CASE WHEN g > :failed AND g <= :failed + 64 THEN now() + interval '1 hour' END,
  prep, CASE WHEN g <= :failed THEN s.updated_at WHEN g <= :failed + 64 THEN now() ELSE prep END
FROM (SELECT i.*, substr(i.custom_id, 5)::int AS g,
        j.created_at + make_interval(secs => (:age - 60) * substr(i.custom_id, 5)::int / :n) AS prep
      FROM items i JOIN jobs j ON j.id = i.job_id WHERE i.job_id = :job AND i.page_count IS NOT NULL) s"""
RESULTS = """INSERT INTO results (id, job_id, item_id, version, is_current, reasoning, answer, raw_text,
  finish_reason, truncated, answer_missing, prompt_tokens, completion_tokens, model_id, engine,
  prompt_version, created_at)
SELECT gen_random_uuid(), job_id, id, 1, true, repeat('The page shows a table. ', 16),
  'Page of ' || custom_id, repeat('x', 600), 'stop', false, false, 1600, 300, 'm', 'vllm', 'caption-v1',
  updated_at
FROM items WHERE job_id = :job AND parent_id IS NOT NULL AND status = 'succeeded'"""
RESULT = {"reasoning": "r" * 400, "answer": "a" * 80, "raw_text": "x" * 600, "boxes": [], "flags": [],
          "finish_reason": "stop", "truncated": False, "answer_missing": False, "prompt_tokens": 1600,
          "completion_tokens": 300, "model_id": "m", "engine": "vllm",
          "prompt_version": "caption-v1"}  # fmt: skip
Op = tuple[Callable[[], Any], Callable[[Any], Any], Callable[[Any], None], int]  # prepare, act, undo, reps


def build(service: JobService, tenant: str, n: int) -> uuid.UUID:
    """One running job of ``n`` image sources in the shape of the module docstring."""
    job = uuid.uuid4()
    done, failed, ready = int(n * 0.6), int(n * 0.61), int(n * 0.8)
    p = {"job": job, "tenant": tenant, "n": n, "done": done, "failed": failed, "ready": ready,
         "age": 0.05 * done + 600}  # fmt: skip
    with service.sessions() as s, s.begin():
        for sql in (JOB, SOURCES, UNITS, RESULTS):
            s.execute(text(sql), p)
    return job


def profile(engine: Engine, call: Callable[[], Any]) -> tuple[Any, list[dict[str, Any]]]:
    """``call``'s result, and every statement it sent, slowest first, with its time and parameters."""
    seen: list[dict[str, Any]] = []

    def before(conn: Any, cur: Any, sql: str, params: Any, ctx: Any, many: bool) -> None:
        conn.info["t0"] = time.perf_counter()

    def after(conn: Any, cur: Any, sql: str, params: Any, ctx: Any, many: bool) -> None:
        ms = (time.perf_counter() - conn.info["t0"]) * 1000
        seen.append({"ms": round(ms, 2), "sql": sql, "params": None if many else params})

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        out = call()
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)
    return out, sorted(seen, key=lambda x: -x["ms"])


def explain(engine: Engine, stmt: dict[str, Any]) -> list[str]:
    """EXPLAIN (ANALYZE, BUFFERS) of a captured statement, in a transaction rolled back."""
    conn = engine.raw_connection()
    try:
        cur = conn.cursor()
        cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + stmt["sql"], stmt["params"])
        return [row[0] for row in cur.fetchall()]
    finally:
        conn.rollback()
        conn.close()


def ops(service: JobService, main: uuid.UUID, n: int, reps: int) -> dict[str, Op]:
    """The calls timed: prepare (untimed), act (timed), undo (untimed), and how many times."""
    req = JobCreate.model_validate(
        {"items": [{"custom_id": f"n{i}", "uri": f"s3://bench/new/{i}.png"} for i in range(1000)]}
    )

    def drop_job(job_id: uuid.UUID) -> None:
        with service.sessions() as s, s.begin():
            s.execute(delete(Job).where(Job.id == job_id))

    def give_back(claim: Any) -> None:
        with service.sessions() as s, s.begin():
            ids = [w.id for w in claim.taken]
            transitions.move_items(s, ids, ItemStatus.READY, {"attempts": Item.attempts - 1})

    def claim_main() -> Any:
        with service.sessions() as s:
            q = select(Item.id).where(Item.job_id == main, Item.status == "ready")
            ids = list(s.scalars(q.order_by(Item.created_at, Item.page).limit(8)))
        return service.claim_units(ids)

    def complete(work: Any) -> None:
        service.complete_units([(w, RESULT) for w in work])
        service.finalize(main, sorted({w.parent_id for w in work}))

    def none(*_: Any) -> None:
        return None

    def reset(*_: Any) -> None:
        """Redis lost its data: the pass wakes every job's waiting work (``sweep_batch`` words)."""
        service.dispatcher.broker_was_reset = lambda: True  # type: ignore[attr-defined]

    def forget_wakes(*_: Any) -> None:
        del service.dispatcher.broker_was_reset  # type: ignore[attr-defined]
        service.dispatcher.sent.clear()  # type: ignore[attr-defined]
        with service.sessions() as s, s.begin():
            s.execute(delete(Wake))

    def middle(*_: Any) -> Any:
        """The key of the line before the middle source's first: the UI's cursor to that page."""
        keys = (Item.created_at, Item.custom_id, Item.id)
        q = select(*keys).where(Item.job_id == main, Item.parent_id.is_(None)).order_by(*keys)
        with service.sessions() as s:
            return (*s.execute(q.offset(n // 2).limit(1)).one(), 0, 0)

    def page(key: Any) -> Any:
        with service.sessions() as s:
            return repo.result_rows_from(s, main, 50, after=key)

    return {
        "submit 1,000 items": (none, lambda _: service.submit("new", req)[0].id, drop_job, reps),
        "claim_next(8)": (none, lambda _: service.claim_next(8), give_back, reps),
        "complete 8 + finalize": (claim_main, complete, none, reps),
        "get: counts + forecast": (none, lambda _: service.get("bulk", main), none, reps),
        "results page (50 at n/2)": (middle, page, none, reps),
        "sweep, first pass": (none, lambda _: sweep(service), none, 1),
        "sweep, later passes": (none, lambda _: sweep(service), none, 3),
        "sweep after a broker reset": (reset, lambda _: sweep(service), forget_wakes, 3),
    }


def timed(op: Op, engine: Engine, budget_s: float) -> tuple[list[float], list[dict[str, Any]]]:
    """Milliseconds of each rep after one warm-up (none for a single rep), stopping early after 5 reps
    once ``budget_s`` is spent; and the statements of the first timed rep (profile)."""
    prepare, act, undo, reps = op
    out: list[float] = []
    statements: list[dict[str, Any]] = []
    deadline = time.monotonic() + budget_s
    for i in range(reps + (reps > 1)):
        x = prepare()
        t0 = time.perf_counter()
        if i == (reps > 1):
            y, statements = profile(engine, functools.partial(act, x))
        else:
            y = act(x)
        if i or reps == 1:
            out.append((time.perf_counter() - t0) * 1000)
        undo(y)
        if len(out) >= 5 and time.monotonic() > deadline:
            break
    return out, statements


def stats(ms: list[float]) -> dict[str, Any]:
    p95 = sorted(ms)[math.ceil(0.95 * len(ms)) - 1]
    return {"median": round(statistics.median(ms), 2), "p95": round(p95, 2), "ms": [round(x, 2) for x in ms]}


def measure(service: JobService, main: uuid.UUID, n: int, a: argparse.Namespace, base: Any) -> dict[str, Any]:
    """Each operation's figures; EXPLAIN ANALYZE of its slowest statements where it is over 2x ``base``."""
    figures: dict[str, Any] = {}
    engine = service.sessions.kw["bind"]
    for label, op in ops(service, main, n, a.reps).items():
        ms, stmts = timed(op, engine, a.budget)
        r = figures[label] = stats(ms)
        print(f"  {label}: median {r['median']} ms, p95 {r['p95']} ms ({len(ms)} reps)", flush=True)
        if base and r["median"] > 2 * base[label]["median"]:
            slow = [st for st in stmts if st["params"] is not None and st["ms"] > 5][:2]
            r["explain"] = [{"ms": st["ms"], "sql": st["sql"], "plan": explain(engine, st)} for st in slow]
        r["statements"] = [{"ms": st["ms"], "sql": " ".join(st["sql"].split())[:400]} for st in stmts[:5]]
    return figures


def run_case(n: int, a: argparse.Namespace, base: dict[str, Any] | None) -> dict[str, Any]:
    with migrated_database(f"vlmq_scale_{uuid.uuid4().hex[:8]}") as url:
        s0 = get_settings()
        settings: Settings = s0.model_copy(update={
            "db": s0.db.model_copy(update={"url": url}),
            "limits": s0.limits.model_copy(update={"max_items_per_job": max(n, 50_000)}),
            "inputs": s0.inputs.model_copy(update={"grants": {"*": ["s3://bench/"]}}),
        })  # fmt: skip
        service = JobService(session_factory(settings), MemoryStore("bench"), MemoryDispatcher(), settings)
        t0 = time.monotonic()
        main, _ = build(service, "bulk", n), build(service, "other", 1000)
        with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")  # the server runs without autovacuum
            about = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database())), version(), "
                                 "current_setting('shared_buffers')").fetchone()  # fmt: skip
        job = service.get("bulk", main)
        case: dict[str, Any] = {"build_s": round(time.monotonic() - t0, 1), "db_size_version_buffers": about}
        case |= {"sources": job.request_counts.model_dump(), "pages": job.page_counts.model_dump()}
        print(f"{n:,} items: built in {case['build_s']} s, database {about and about[0]}", flush=True)
        case["ops"] = measure(service, main, n, a, base and base["ops"])
        service.sessions.kw["bind"].dispose()
    return case


def table(cases: dict[int, dict[str, Any]]) -> str:
    sizes = sorted(cases)
    head = "| operation | " + " | ".join(f"{n:,} items: median / p95 ms" for n in sizes)
    lines = [head + (" | ratio of medians |" if len(sizes) > 1 else " |")]
    lines.append("|---" * (len(sizes) + 1 + (len(sizes) > 1)) + "|")
    for label in cases[sizes[0]]["ops"]:
        rs = [cases[n]["ops"][label] for n in sizes]
        row = f"| {label} | " + " | ".join(f"{r['median']:.1f} / {r['p95']:.1f}" for r in rs)
        ratio = f" | {rs[-1]['median'] / rs[0]['median']:.1f}x |" if len(sizes) > 1 else " |"
        lines.append(row + ratio)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, nargs="+", default=[10_000, 1_000_000])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--budget", type=float, default=60.0, help="seconds per operation, after 5 reps")
    ap.add_argument("--out", type=Path, default=Path(f"bench/results/scale-{datetime.date.today()}.json"))
    a = ap.parse_args()
    t0, cases = time.monotonic(), dict[int, dict[str, Any]]()
    for n in sorted(a.items):
        cases[n] = run_case(n, a, cases[min(cases)] if cases else None)
    print(table(cases))
    for n, case in cases.items():
        for label, r in case["ops"].items():
            for e in r.get("explain", []):
                print(f"\n-- {n:,} items, {label}: {e['ms']} ms\n{e['sql']}\n" + "\n".join(e["plan"]))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    wall = round(time.monotonic() - t0, 1)
    command = " ".join(["python -m bench.scale", *sys.argv[1:]])
    report = {"command": command, "wall_s": wall, "date": datetime.datetime.now().isoformat(), "cases": cases}
    a.out.write_text(json.dumps(report, indent=1, default=str))
    print(f"\n{report['wall_s']} s in all; figures in {a.out}")


if __name__ == "__main__":
    main()
