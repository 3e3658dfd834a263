"""EngineStats: the GPU worker's account of its engine (busy time, requests, tokens), without a GPU."""

from __future__ import annotations

import time

from workers.inference.vllm_engine import EngineStats


def test_busy_time_counts_overlapping_requests_once() -> None:
    stats = EngineStats()
    stats.started()
    stats.started()  # a second batch joins while the first is in flight
    time.sleep(0.05)
    stats.finished()
    time.sleep(0.05)
    stats.finished()
    stats.tokens(7)
    busy = stats.busy_seconds()
    assert 0.09 <= busy < 0.5
    assert (stats.requests, stats.in_flight, stats.output_tokens) == (2, 0, 7)
    time.sleep(0.05)  # idle time is not busy time
    assert stats.busy_seconds() == busy


def test_an_open_span_counts_until_now() -> None:
    stats = EngineStats()
    stats.started()
    time.sleep(0.03)
    assert stats.busy_seconds() >= 0.03 and stats.in_flight == 1
