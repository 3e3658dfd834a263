"""The REST user: small jobs at random (Poisson) moments, by JSON naming s3:// inputs or by upload. Some
are cancelled, some resubmitted with their Idempotency-Key (the same job must come back; a different
body under the key must be refused), some name an input that is uploaded only after the job ended and
are retried then; some hold a broken PDF. Every submission carries a key, so that one the user retries
after a fault cannot make two jobs."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tests.soak.bulk import has_failures, retry_failed
from tests.soak.clients import TERMINAL, Api, JobRecord, Ledger, poisson
from tests.soak.config import DAY, HOUR, SoakConfig
from tests.soak.inputs import Corpus

SHARE = 0.12  # of the run's items
ITEMS_PER_JOB = 8.0  # 3.5 sources of 2.3 items (an image: 2; a 1-3 page PDF: 3 on average)
P_CANCEL, P_RESUBMIT, P_CONFLICT, P_LATE, P_BROKEN, P_UPLOAD = 0.08, 0.1, 0.02, 0.1, 0.05, 0.2
P_RETRY_EXPIRED = 0.3


@dataclass
class Plan:
    """What the user will do with one job, drawn when it is made."""

    key: str
    body: dict[str, Any] | None  # JSON submissions
    files: list[tuple[str, bytes]] = field(default_factory=list)  # uploads
    late: tuple[str, bytes] | None = None  # (key, bytes) to upload before retrying
    cancel_at: datetime | None = None
    resubmit_at: datetime | None = None
    conflict: bool = False


class RestUser:
    name = "rest"

    def __init__(self, api: Api, corpus: Corpus, ledger: Ledger, cfg: SoakConfig, rng: random.Random):
        self.api, self.corpus, self.ledger, self.rng = api, corpus, ledger, rng
        self.rate = SHARE * cfg.items / ITEMS_PER_JOB / (cfg.days * DAY)  # jobs per simulated second
        self.plans: dict[str, Plan] = {}
        self.waiting: list[Plan] = []  # submissions to try again after a fault
        self.last: float = 0.0
        self.turn = 0

    def tick(self, now: datetime, elapsed: float, submitting: bool) -> None:
        if submitting:
            for _ in range(poisson(self.rng, self.rate * (elapsed - self.last))):
                self.waiting.append(self._new())
        self.last = elapsed
        self.waiting = [p for p in self.waiting if not self._submit(p, now)]
        self._act(now, submitting)
        self._follow(now)

    def _new(self) -> Plan:
        plan = Plan(str(uuid.uuid4()), None)
        n = self.rng.randint(1, 6)
        if self.rng.random() < P_UPLOAD:
            plan.files = [(f"scan-{i}.png", self.corpus.image_bytes()) for i in range(n)]
            return plan
        uris = [self.corpus.image() if self.rng.random() < 0.7 else self.corpus.pdf(self.rng.randint(1, 3))
                for _ in range(n)]  # fmt: skip
        if self.rng.random() < P_LATE:
            uri, key, data = self.corpus.late()
            uris.append(uri)
            plan.late = (key, data)
        if self.rng.random() < P_BROKEN:
            uris.append(self.corpus.broken())
        plan.body = {"items": [{"custom_id": f"req-{i}", "uri": u} for i, u in enumerate(uris)]}
        return plan

    def _submit(self, plan: Plan, now: datetime) -> bool:
        job = self._post(plan)
        if job is None:
            return False
        rec = JobRecord(job["id"], self.name, "rest", job["request_counts"]["total"], now, plan.key)
        self.ledger.add(rec)
        self.plans[rec.id] = plan
        r = self.rng.random
        plan.cancel_at = now + timedelta(seconds=r() * 2 * HOUR) if r() < P_CANCEL else None
        plan.resubmit_at = now + timedelta(seconds=r() * 3 * HOUR) if r() < P_RESUBMIT else None
        plan.conflict = plan.body is not None and r() < P_CONFLICT
        return True

    def _post(self, plan: Plan, body: dict[str, Any] | None = None) -> dict[str, Any] | None:
        headers = {"Idempotency-Key": plan.key}
        if plan.files:
            files = [("file", (name, data, "image/png")) for name, data in plan.files]
            return self.api.ok("POST", "/v1/jobs", files=files, headers=headers)
        return self.api.ok("POST", "/v1/jobs", json=body or plan.body, headers=headers)

    def _act(self, now: datetime, submitting: bool) -> None:
        for job_id, plan in self.plans.items():
            rec = self.ledger.jobs[job_id]
            due = plan.cancel_at is not None and plan.cancel_at <= now and submitting
            if due and self.api.ok("POST", f"/v1/jobs/{job_id}/cancel") is not None:
                plan.cancel_at, rec.cancel_asked = None, True
            if plan.resubmit_at and plan.resubmit_at <= now:
                self._resubmit(rec, plan)

    def _resubmit(self, rec: JobRecord, plan: Plan) -> None:
        """The same key: the same body must answer the same job (200); another body, 409."""
        body = plan.body
        if plan.conflict and body is not None:
            body = {**body, "prompt": "a different request under the same key"}
        files = None if body else [("file", (n, d, "image/png")) for n, d in plan.files]
        r = self.api.call("POST", "/v1/jobs", json=body, files=files, headers={"Idempotency-Key": plan.key})
        if r is None or r.status_code >= 500 or r.status_code == 429:
            return
        plan.resubmit_at = None
        self.ledger.stats["resubmits"] += 1
        want = 409 if plan.conflict else 200
        if r.status_code != want or (want == 200 and r.json()["id"] != rec.id):
            self.ledger.problem(
                f"resubmit of {rec.id} (conflict={plan.conflict}): {r.status_code} {r.text[:200]}"
            )

    def _follow(self, now: datetime) -> None:
        """A few open jobs a turn (round robin), as a client polling politely."""
        open_jobs = self.ledger.open(self.name)
        self.turn += 1
        for rec in open_jobs[self.turn % 7 :: 7][:12]:
            job = self.api.ok("GET", f"/v1/jobs/{rec.id}")
            if job is not None:
                rec.status = job["status"]
                if rec.status in TERMINAL:
                    self._ended(rec, job)

    def _ended(self, rec: JobRecord, job: dict[str, Any]) -> None:
        plan = self.plans[rec.id]
        if plan.late is not None:  # the missing input exists now: retrying its job must succeed
            self.corpus.stack.put(*plan.late)
            if retry_failed(self.api, rec, self.ledger.problem):
                plan.late = None
        elif rec.retries == 0 and self._retries(rec, job):
            retry_failed(self.api, rec, self.ledger.problem)

    def _retries(self, rec: JobRecord, job: dict[str, Any]) -> bool:
        """Whether the user retries this ended job: some expired ones, half of those with failures."""
        if rec.status == "expired":
            return self.rng.random() < P_RETRY_EXPIRED
        return has_failures(job) and self.rng.random() < 0.5
