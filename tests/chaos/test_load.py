"""Load: a 10,000-item job through the real API, Postgres, Redis, S3 and workers (the fake fixed-latency
engine). The API must accept at least 2,000 items/s; the whole job must end exactly once per item."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.chaos.checks import exactly_once
from tests.chaos.stack import AUTH, Stack

pytestmark = [pytest.mark.chaos, pytest.mark.slow]
N = 10_000
MIN_ITEMS_PER_S = 2_000


def _submit_timed(stack: Stack, uris: list[str]) -> tuple[str, float]:
    items = [{"custom_id": f"item-{i:05d}", "uri": u} for i, u in enumerate(uris)]
    body = {"items": items}
    t0 = time.perf_counter()
    r = httpx.post(f"{stack.base}/v1/jobs", json=body, headers=AUTH, timeout=120)
    seconds = time.perf_counter() - t0
    assert r.status_code == 202, r.text
    return r.json()["id"], seconds


def test_api_accepts_2000_items_per_second(stack: Stack) -> None:
    """Submission alone (stored in Postgres, every prep message in Redis), then cancelled."""
    (uri,) = stack.put_images(1)
    _submit_timed(stack, [uri] * 10)  # warm up: the API's first request sets up its pools and caches
    job_id, seconds = _submit_timed(stack, [uri] * N)
    rate = N / seconds
    print(f"\nLOAD submission: {N} items in {seconds:.2f} s = {rate:.0f} items/s")
    r = httpx.post(f"{stack.base}/v1/jobs/{job_id}/cancel", headers=AUTH, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["status"] in ("cancelling", "cancelled")
    assert rate >= MIN_ITEMS_PER_S


@pytest.mark.chaos_long
@pytest.mark.timeout(3600)
@pytest.mark.stack_env(VLMQ_MODEL__FAKE_LATENCY_SECONDS="0.01", VLMQ_QUEUE__REQUEUE_AFTER_SECONDS="900")
def test_10000_item_job(stack: Stack) -> None:
    (uri,) = stack.put_images(1)
    t0 = time.monotonic()
    job_id, seconds = _submit_timed(stack, [uri] * N)
    done, t1 = stack.wait_terminal(job_id, timeout=3300)
    assert done["status"] == "completed", done
    figures = exactly_once(stack, job_id, N, "10,000-item job (fake engine)", t1 - t0)
    print(f"\nLOAD job: submitted in {seconds:.2f} s ({N / seconds:.0f} items/s), done in {t1 - t0:.0f} s")
    assert figures.failures == 0
