"""What the three users share: a tenant's HTTP client that lives through faults, the ledger of every
job they were told of, and arrivals in simulated time."""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

TERMINAL = frozenset({"completed", "failed", "cancelled", "expired"})


class Api:
    """One tenant's client, as a careful user writes it: a request that meets a fault (no answer, a 5xx,
    a 429) is not retried on the spot; its caller tries again at a later turn, with the same
    Idempotency-Key where it submits. ``stats`` counts every answer by status."""

    def __init__(self, base: str, key: str, stats: Counter[str]) -> None:
        self.http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        self.key, self.stats = key, stats

    def call(self, method: str, path: str, **kw: Any) -> httpx.Response | None:
        """The answer, or None when there was none (connection refused, timed out)."""
        try:
            r = self.http.request(method, path, **kw)
        except httpx.HTTPError:
            self.stats["no_answer"] += 1
            return None
        self.stats[f"http_{r.status_code}"] += 1
        return r

    def ok(self, method: str, path: str, **kw: Any) -> dict[str, Any] | None:
        """The JSON of a 2xx answer, else None (to be tried again later)."""
        r = self.call(method, path, **kw)
        return r.json() if r is not None and r.status_code < 300 else None

    def close(self) -> None:
        self.http.close()


@dataclass
class JobRecord:
    id: str
    user: str  # bulk | rest | openai
    tenant: str
    sources: int
    submitted: datetime  # simulated
    key: str | None = None
    batch_id: str | None = None
    status: str = "queued"  # as last seen
    retries: int = 0  # POST /retry answered 200
    cancel_asked: bool = False
    notes: list[str] = field(default_factory=list)


@dataclass
class Ledger:
    """Every job a user was answered with, and what the users saw that was wrong (``problems``)."""

    jobs: dict[str, JobRecord] = field(default_factory=dict)
    stats: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def add(self, rec: JobRecord) -> None:
        if rec.id in self.jobs:
            return
        self.jobs[rec.id] = rec
        self.stats[f"jobs_{rec.user}"] += 1

    def problem(self, what: str) -> None:
        self.problems.append(what)

    def open(self, user: str) -> list[JobRecord]:
        return [r for r in self.jobs.values() if r.user == user and r.status not in TERMINAL]


def poisson(rng: random.Random, mean: float) -> int:
    """Arrivals in an interval with ``mean`` expected (Knuth's method: means here are small)."""
    if mean <= 0:
        return 0
    limit, k, p = math.exp(-min(mean, 30.0)), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1
