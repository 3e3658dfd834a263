"""The bulk captioning user: a job of thousands of pages (small PDFs in its granted bucket) at planned
moments of each simulated day; it follows its jobs and retries a job's failed pages once it ended.
Every second job is submitted as a source (issue 25): a folder of PDFs named by a glob, listed by the
system as it runs, instead of a list of items."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from tests.soak.clients import TERMINAL, Api, JobRecord, Ledger
from tests.soak.config import DAY, SoakConfig
from tests.soak.inputs import Corpus

SHARE = 0.8  # of the run's items


class BulkUser:
    name = "bulk"

    def __init__(self, api: Api, corpus: Corpus, ledger: Ledger, cfg: SoakConfig, rng: random.Random):
        self.api, self.corpus, self.ledger, self.rng = api, corpus, ledger, rng
        lo, hi = cfg.bulk_pages
        self.pages = (lo, hi)
        slots = max(1, round(cfg.days * cfg.bulk_jobs_per_day))
        per_job = SHARE * cfg.items / slots
        self.pdfs = max(2, round(per_job / ((lo + hi) / 2 + 1)))  # a PDF: 1 source + its pages
        # Submission moments (simulated seconds from the start), spread over the run.
        # (the first at once: the first night's reprocess finds results to refresh)
        self.plan = [0.0, *sorted(rng.uniform(0, cfg.days * DAY * 0.9) for _ in range(slots - 1))]
        self.pending: tuple[str, dict[str, Any], int] | None = None  # a submission to try again
        self.submitted = 0

    def tick(self, now: datetime, elapsed: float, submitting: bool) -> None:
        if self.pending is not None or (submitting and self.plan and self.plan[0] <= elapsed):
            self._submit(now)
        for rec in self.ledger.open(self.name):
            self._follow(rec)

    def _submit(self, now: datetime) -> None:
        if self.pending is None:
            self.plan.pop(0)
            n = self.pdfs
            self.submitted += 1
            if self.submitted % 2 == 0:  # a source job: the folder's PDFs, listed while it runs
                what: dict[str, Any] = {"source": {"prefix": self.corpus.folder(n, self._pages)}}
            else:
                what = {"items": [{"custom_id": f"doc-{i:05d}", "uri": self.corpus.pdf(self._pages())}
                                  for i in range(n)]}  # fmt: skip
            self.pending = (str(uuid.uuid4()), {**what, "options": {"task": "caption"}}, n)
        key, body, n = self.pending
        self.ledger.stats["bulk_posts"] += 1
        job = self.api.ok("POST", "/v1/jobs", json=body, headers={"Idempotency-Key": key})
        if job is not None:
            self.ledger.add(JobRecord(job["id"], self.name, "bulk", n, now, key))
            self.ledger.stats["bulk_source_jobs"] += "source" in body
            self.pending = None

    def _pages(self) -> int:
        return self.rng.randint(*self.pages)

    def _follow(self, rec: JobRecord) -> None:
        job = self.api.ok("GET", f"/v1/jobs/{rec.id}")
        if job is None:
            return
        rec.status = job["status"]
        if rec.status in TERMINAL and has_failures(job) and rec.retries == 0:
            retry_failed(self.api, rec, self.ledger.problem)


def has_failures(job: dict[str, Any]) -> bool:
    return bool(job["request_counts"]["failed"] or job["page_counts"]["failed"])


def retry_failed(api: Api, rec: JobRecord, problem: Callable[[str], None]) -> bool:
    """POST /retry on an ended job with failures: 200 reopens it; 409 only for a cancelled job. False
    when a fault kept the answer: the job is followed again and asked again at a later turn."""
    r = api.call("POST", f"/v1/jobs/{rec.id}/retry")
    if r is None or r.status_code >= 500:
        rec.status = "retrying"
        return False
    rec.retries += 1
    if r.status_code == 200:
        rec.status = r.json()["status"]
    elif r.status_code != 409 or rec.status != "cancelled":
        problem(f"retry of {rec.id} ({rec.status}) answered {r.status_code}: {r.text[:200]}")
    return True
