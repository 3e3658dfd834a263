"""The storage benchmark (bench/store.py) runs against real services (a dev stack: embedded Postgres and
Redis, moto's S3 server) through the real prep and inference code, so a change that breaks it shows
up in CI rather than when its figure is next wanted."""

from __future__ import annotations

import os

import pytest

from bench.store import TEXT, run, tail
from jobs.config import get_settings


def test_the_storage_benchmark_stores_every_page_and_reports_cpu_per_page(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VLMQ_LIMITS__BATCH_SIZE", "2")
    env = dict(os.environ)
    r = run(docs=2, per_doc=5, repeats=1)
    # The batches prep dispatched: each source's first page alone, then pairs: [1], [2, 3], [4, 5].
    assert (r["pages"], r["batches"]) == (10, 6)
    assert 0 < r["after_ms"] < r["whole_ms"]
    assert dict(os.environ) == env and get_settings().db.url == get_settings.__wrapped__().db.url
    assert len(TEXT) > 4000 and "</think><answer>" in TEXT


def test_the_tail_benchmark_answers_every_batch_at_once_and_completes_the_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VLMQ_LIMITS__BATCH_SIZE", "2")
    monkeypatch.setenv("VLMQ_MODEL__RESULT_WRITERS", "1")
    t = tail(docs=2, per_doc=3, repeats=1)  # raises unless the job completed
    assert (t["pages"], t["batches"], t["writers"]) == (6, 4, 1)  # [1], [2, 3] for each source
    assert 0 < t["tail_s"] < 30
