"""What a claim in turn costs as active jobs pile up (jobs.scheduling.fairness): ``python -m bench.claims
[JOBS ...] --bulk PAGES``. Each run is a fresh database on the test Postgres (tests.conftest) holding one
bulk job of ``--bulk`` ready pages and JOBS running jobs of one ready page each (50 tenants); it times
30 claims of 8 pages. Claims are serialized (an advisory lock), so 1 / the p50 bounds claims a second."""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid

from sqlalchemy import text

from jobs.config import get_settings
from tests.conftest import migrated_database

JOBS = """INSERT INTO jobs (id, tenant, status, prompt, prompt_version, model_id, request_hash, total_items)
SELECT gen_random_uuid(), 't' || (g % 50), 'running', 'p', 'v', 'm', 'h', 1 FROM generate_series(1, :n) g"""
BULK = """INSERT INTO jobs (id, tenant, status, prompt, prompt_version, model_id, request_hash, total_items)
VALUES (:bulk, 'bulk', 'running', 'p', 'v', 'm', 'h', 1)"""
SOURCES = """INSERT INTO items (id, job_id, custom_id, kind, uri, status)
SELECT gen_random_uuid(), id, 'd', 'source', 's3://b/x.pdf', 'prepared' FROM jobs"""
PAGES = """INSERT INTO items (id, job_id, parent_id, custom_id, kind, page, media_key, status)
SELECT gen_random_uuid(), i.job_id, i.id, 'd', 'page', g, 'm.png', 'ready' FROM items i
CROSS JOIN LATERAL generate_series(1, CASE WHEN i.job_id = :bulk THEN :pages ELSE 1 END) g
WHERE i.parent_id IS NULL"""


def measure(jobs: int, pages: int) -> dict[str, float]:
    with migrated_database(f"vlmq_claims_{uuid.uuid4().hex[:8]}") as url:
        os.environ["VLMQ_DB__URL"] = url
        get_settings.cache_clear()
        from jobs.service import build_service

        service = build_service(get_settings())
        bulk = uuid.uuid4()
        with service.sessions() as s, s.begin():
            for sql in (JOBS, BULK, SOURCES, PAGES):
                s.execute(text(sql), {"n": jobs, "bulk": bulk, "pages": pages})
        with service.sessions() as s:
            s.execute(text("ANALYZE"))
            s.commit()
        service.claim_next(8)  # the pool's first connection
        times = []
        for _ in range(30):
            t0 = time.perf_counter()
            service.claim_next(8)
            times.append(time.perf_counter() - t0)
        service.sessions.kw["bind"].dispose()
    return {"active_jobs": jobs + 1, "p50_ms": round(statistics.median(times) * 1000, 1),
            "max_ms": round(max(times) * 1000, 1)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("jobs", type=int, nargs="*", default=[10, 1000, 5000])
    ap.add_argument("--bulk", type=int, default=100_000)
    a = ap.parse_args()
    os.environ.setdefault("VLMQ_REDIS__URL", "redis://127.0.0.1:6379/0")  # the service's dispatcher
    for n in a.jobs:
        r = measure(n, a.bulk)
        print(f"{r['active_jobs']:>6} active jobs, a bulk job of {a.bulk:,} ready pages: claim of 8 "
              f"p50 {r['p50_ms']} ms, max {r['max_ms']} ms", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
