"""Reprocessing's pure parts: schedule slots, dedupe keys, the cron setting, the beat entry, and the
settings fingerprint stored on results."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from jobs.adapters.dispatch import GPU_QUEUE, REPROCESS_TASK
from jobs.config import ReprocessSettings, Settings
from jobs.fingerprint import output_settings, settings_hash
from jobs.reprocessing.reprocessor import cli_key, schedule_slot
from jobs.reprocessing.selection import Rules
from workers.beat import beat_schedule

NIGHTLY = "0 2 * * *"


def _at(day: int, hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "slot"),
    [
        (_at(25, 2, 0, 0), _at(25, 2, 0)),  # beat fires on time
        (_at(25, 2, 0, 4), _at(25, 2, 0)),  # a second scheduler, a little later
        (_at(25, 1, 59, 30), _at(25, 2, 0)),  # a worker whose clock runs behind beat's
        (_at(25, 13, 0), _at(25, 2, 0)),  # a manual rerun the same day
        (_at(25, 1, 0), _at(24, 2, 0)),  # before tonight's slot: last night's
    ],
)
def test_every_trigger_of_one_night_maps_to_one_slot(now: datetime, slot: datetime) -> None:
    assert schedule_slot(NIGHTLY, now) == slot


def test_cli_keys_name_the_rules_and_the_day() -> None:
    rules = Rules(tenant="a")
    assert cli_key(rules, _at(25, 9, 0)) == cli_key(Rules(tenant="a"), _at(25, 23, 0))
    assert cli_key(rules, _at(25, 9, 0)) != cli_key(Rules(tenant="b"), _at(25, 9, 0))
    assert cli_key(rules, _at(25, 9, 0)) != cli_key(rules, _at(26, 9, 0))


@pytest.mark.parametrize("bad", ["nightly", "0 2 * *", "0 0 2 * * *", "61 2 * * *"])
def test_the_schedule_must_be_a_five_field_cron(bad: str) -> None:
    with pytest.raises(ValidationError, match="cron"):
        ReprocessSettings(schedule=bad)


def test_beat_runs_reprocess_on_the_configured_schedule() -> None:
    entry = beat_schedule(Settings(reprocess=ReprocessSettings(schedule="30 3 * * 1")))["reprocess"]
    assert entry["task"] == REPROCESS_TASK and entry["options"] == {"queue": GPU_QUEUE}
    assert entry["schedule"].hour == {3} and entry["schedule"].minute == {30}
    assert entry["schedule"].day_of_week == {1}
    # "" turns the reprocess entry off; the sweeper's stays (one schedule holds both).
    assert list(beat_schedule(Settings(reprocess=ReprocessSettings(schedule="")))) == ["vlmq-sweep"]


def test_output_settings_take_the_job_options_over_the_workers() -> None:
    settings = Settings()
    base = output_settings(settings, {})
    assert base["max_new_tokens"] == settings.model.max_new_tokens
    assert base["longest_side"] == settings.limits.render_longest_side
    mine = output_settings(settings, {"max_new_tokens": 7, "temperature": 0.5, "longest_side": 640})
    assert (mine["max_new_tokens"], mine["temperature"], mine["longest_side"]) == (7, 0.5, 640)
    assert settings_hash(mine) != settings_hash(base)


def test_the_settings_hash_ignores_key_order() -> None:
    a = {"max_new_tokens": 64, "temperature": 0.0, "quantization": None}
    assert settings_hash(a) == settings_hash(dict(reversed(list(a.items()))))
    assert len(settings_hash(a)) == 16
