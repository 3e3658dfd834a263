"""How many inference tasks a vLLM worker runs at once (Settings.gpu_tasks): by default enough for a
backlog of requests waiting inside the engine, so a wave of finished requests is replaced at once."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from jobs.config import Settings


def _settings(**model: object) -> Settings:
    return Settings(_env_file=None, model=model)  # type: ignore[call-arg]


def test_default_keeps_twice_the_engine_slots_in_flight() -> None:
    s = _settings()
    assert s.gpu_tasks * s.limits.batch_size == 2 * s.model.max_num_seqs  # 64 x 8 = 512 against 256


def test_follows_the_engine_slots_and_rounds_up() -> None:
    assert _settings(max_num_seqs=100).gpu_tasks == 25  # 200 requests in batches of 8: 25 tasks
    assert _settings(max_num_seqs=1).gpu_tasks == 1


def test_an_explicit_number_wins_and_a_negative_one_is_refused() -> None:
    assert _settings(batches_in_flight=5).gpu_tasks == 5
    with pytest.raises(ValidationError, match="batches_in_flight"):
        _settings(batches_in_flight=-1)
