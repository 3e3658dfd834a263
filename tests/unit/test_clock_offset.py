"""jobs.clock.CachedOffset: what Celery's now() reads under VLMQ_CLOCK__SIMULATED."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from jobs.clock import CachedOffset


def test_postgres_unreachable_keeps_the_last_offset_instead_of_raising() -> None:
    """Found by the soak: a Postgres restart made this raise inside Celery beat (which died) and inside
    every task retry's countdown (whose message was then dropped)."""
    answers: list[float | Exception] = [3600.0, OSError("connection refused"), 7200.0]

    def read() -> float:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    clock = CachedOffset(read, simulated=True, ttl=0)
    for want in (3600, 3600, 7200):  # read, unreachable (the last offset stands), read again
        got = (clock.now() - datetime.now(UTC)).total_seconds()
        assert got == pytest.approx(want, abs=5)
        time.sleep(0.001)


def test_not_simulated_is_real_time_and_reads_nothing() -> None:
    def read() -> float:
        raise AssertionError("read")

    assert abs((CachedOffset(read, simulated=False).now() - datetime.now(UTC)).total_seconds()) < 5
