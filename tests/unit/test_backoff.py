"""Task retries wait Celery's exponential backoff with full jitter (workers.backoff)."""

from __future__ import annotations

from workers.backoff import backoff


def test_each_wait_is_below_its_exponential_bound() -> None:
    for retries, bound in [(0, 1), (1, 2), (3, 8), (5, 32), (6, 60), (20, 60)]:
        waits = [backoff(retries, 60) for _ in range(200)]
        assert min(waits) >= 0 and max(waits) <= bound, (retries, bound)


def test_workers_cut_off_together_do_not_come_back_together() -> None:
    waits = {backoff(6, 60) for _ in range(200)}  # 200 tasks retrying after one outage
    assert len(waits) > 20  # spread over the window, not all at 60 s
