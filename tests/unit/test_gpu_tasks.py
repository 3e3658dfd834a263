"""How many requests the vLLM engine holds (Settings.engine_backlog) and how many inference tasks a
worker runs at once (Settings.gpu_tasks): by default a backlog of requests waiting inside the engine,
so a wave of finished requests is replaced at once, and enough tasks to fill it when they are half
full (a source's first page goes alone); and how many result writer processes it starts."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from jobs.config import Settings


def _settings(**model: object) -> Settings:
    return Settings(_env_file=None, model=model)  # type: ignore[call-arg]


def test_default_keeps_twice_the_engine_slots_in_the_engine_and_fills_them_with_half_full_tasks() -> None:
    s = _settings()
    assert s.engine_backlog == 2 * s.model.max_num_seqs == 512  # against 256 slots
    assert s.gpu_tasks * s.limits.batch_size // 2 == s.engine_backlog  # 128 tasks of 4 pages: 512


def test_follows_the_engine_slots_and_rounds_up() -> None:
    assert _settings(max_num_seqs=100).gpu_tasks == 50  # 200 requests in tasks of 4: 50 tasks
    assert _settings(max_num_seqs=3).gpu_tasks == 2  # 6 requests in tasks of 4: 2
    assert _settings(max_requests_in_engine=64).engine_backlog == 64
    assert _settings(max_requests_in_engine=64).gpu_tasks == 16


def test_an_explicit_number_wins_and_a_negative_one_is_refused() -> None:
    assert _settings(batches_in_flight=5).gpu_tasks == 5
    with pytest.raises(ValidationError, match="batches_in_flight"):
        _settings(batches_in_flight=-1)
    with pytest.raises(ValidationError, match="max_requests_in_engine"):
        _settings(max_requests_in_engine=-1)


def test_result_writers_default_to_four_for_vllm_and_none_for_the_one_task_engines() -> None:
    assert _settings(engine="vllm").result_writers == 4
    assert _settings(engine="transformers").result_writers == 0
    assert _settings(engine="fake").result_writers == 0
    assert _settings(engine="vllm", result_writers=0).result_writers == 0  # off: the task threads store
    assert _settings(engine="fake", result_writers=2).result_writers == 2
    with pytest.raises(ValidationError, match="result_writers"):
        _settings(result_writers=-1)


def test_the_writers_of_a_process_are_made_once_and_start_nothing_until_used() -> None:
    from workers import writers

    assert writers.for_settings(_settings(engine="fake")) is None
    pool = writers.for_settings(_settings(engine="vllm"))
    assert pool is not None and pool.processes == 4 and pool._pool is None  # spawned at start() or use
    assert writers.for_settings(_settings(engine="vllm")) is pool
    with pytest.raises(ValueError, match="at least one process"):
        writers.Writers(0)
