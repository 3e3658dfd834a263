"""`vlmq probe`'s liveness and ready-file checks, and who touches the liveness file (workers.liveness,
workers.heartbeat), on files whose age a test sets. Postgres and Redis: tests/integration/test_probe.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery.signals import after_task_publish
from typer.testing import CliRunner

from api.cli import app
from api.cli.probe import ProbeFailed, beat_alive, engine_loaded, live_file_fresh
from jobs.config import Settings, get_settings
from workers.heartbeat import Heartbeat
from workers.liveness import Pulse, touch, touch_on_publish


def _settings(tmp_path: Path, **probe: Any) -> Settings:
    s = Settings()
    values = {"live_file": str(tmp_path / "alive"), **probe}
    return s.model_copy(update={"probe": s.probe.model_copy(update=values)})


def _aged(path: Path, seconds: float) -> None:
    path.touch()
    old = time.time() - seconds
    os.utime(path, (old, old))


def test_a_recent_liveness_file_is_alive(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    _aged(tmp_path / "alive", 5)
    assert live_file_fresh(s).startswith("alive")


def test_a_stale_liveness_file_is_stuck(tmp_path: Path) -> None:
    s = _settings(tmp_path, live_max_age_seconds=60)
    _aged(tmp_path / "alive", 61)
    with pytest.raises(ProbeFailed, match=r"61 s old \(limit 60 s\): stuck"):
        live_file_fresh(s)


def test_the_clock_decides_the_age(tmp_path: Path) -> None:
    s = _settings(tmp_path, live_max_age_seconds=60)
    touch(s.probe.live_file)
    mtime = os.stat(tmp_path / "alive").st_mtime
    assert live_file_fresh(s, now=mtime + 59)
    with pytest.raises(ProbeFailed, match="stuck"):
        live_file_fresh(s, now=mtime + 61)


def test_a_missing_or_unconfigured_liveness_file_fails(tmp_path: Path) -> None:
    with pytest.raises(ProbeFailed, match="missing"):
        live_file_fresh(_settings(tmp_path))
    with pytest.raises(ProbeFailed, match="VLMQ_PROBE__LIVE_FILE"):
        live_file_fresh(_settings(tmp_path, live_file=None))


def test_beat_may_be_quiet_for_three_sweep_intervals(tmp_path: Path) -> None:
    s = _settings(tmp_path, live_max_age_seconds=60)
    s = s.model_copy(update={"queue": s.queue.model_copy(update={"sweep_interval_seconds": 100.0})})
    touch(s.probe.live_file)
    mtime = os.stat(tmp_path / "alive").st_mtime
    assert beat_alive(s, now=mtime + 299)
    with pytest.raises(ProbeFailed, match="limit 300 s"):
        beat_alive(s, now=mtime + 301)


def _ready(tmp_path: Path, pid: int | None) -> Settings:
    s = Settings()
    path = tmp_path / "engine-ready.json"
    if pid is not None:
        path.write_text(json.dumps({"engine": "fake", "model_id": "m", "pid": pid}))
    return s.model_copy(update={"model": s.model.model_copy(update={"ready_file": str(path)})})


def test_the_engine_is_loaded_when_its_ready_file_names_a_live_process(tmp_path: Path) -> None:
    assert "engine fake (m) loaded" in engine_loaded(_ready(tmp_path, os.getpid()))


def test_a_missing_ready_file_means_the_engine_is_not_loaded(tmp_path: Path) -> None:
    with pytest.raises(ProbeFailed, match=r"engine not loaded: ready file .* missing"):
        engine_loaded(_ready(tmp_path, None))


def test_a_ready_file_left_by_a_dead_process_is_stale(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    with pytest.raises(ProbeFailed, match=f"pid {gone.pid}, which is not running"):
        engine_loaded(_ready(tmp_path, gone.pid))


def test_a_worker_without_an_engine_ready_file_needs_none() -> None:
    s = Settings()
    s = s.model_copy(update={"model": s.model.model_copy(update={"ready_file": None})})
    assert engine_loaded(s) == "no engine ready file configured"


class _Timer:
    def __init__(self) -> None:
        self.calls: list[tuple[float, Callable[..., None], tuple[Any, ...]]] = []

    def call_repeatedly(self, secs: float, fn: Callable[..., None], args: tuple[Any, ...]) -> Any:
        self.calls.append((secs, fn, args))
        return self


@pytest.fixture
def live_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "alive"
    monkeypatch.setenv("VLMQ_PROBE__LIVE_FILE", str(path))
    monkeypatch.setenv("VLMQ_PROBE__LIVE_INTERVAL_SECONDS", "7")
    get_settings.cache_clear()
    yield path
    get_settings.cache_clear()


def test_the_consumer_loop_touches_the_file_on_its_timer(live_env: Path) -> None:
    class Consumer:
        timer = _Timer()

    step = Pulse.__new__(Pulse)  # its bootstep __init__ needs a whole blueprint
    step.tref = None
    step.start(Consumer())
    assert live_env.exists()  # at once: the consumer has started
    [(secs, fn, args)] = Consumer.timer.calls
    assert secs == 7
    _aged(live_env, 100)
    fn(*args)
    assert time.time() - live_env.stat().st_mtime < 5


def test_beat_touches_the_file_when_it_sends(live_env: Path) -> None:
    receiver = touch_on_publish(get_settings())
    try:
        _aged(live_env, 100)
        after_task_publish.send(sender="vlmq.sweep", body=None, exchange="", routing_key="maintenance")
        assert time.time() - live_env.stat().st_mtime < 5
    finally:
        after_task_publish.disconnect(receiver)


def test_a_task_heartbeat_touches_the_file(live_env: Path) -> None:
    """A solo-pool worker's loop is busy with the task: its lease renewals say it is alive."""
    renewed = threading.Event()

    class Service:
        settings = get_settings()

        def renew_leases(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
            renewed.set()
            return {}

    with Heartbeat(Service(), [uuid.uuid4()], interval=0.05):  # type: ignore[arg-type]
        assert renewed.wait(5)
    assert live_env.exists()


def test_the_command_exits_1_with_one_line_saying_why(live_env: Path) -> None:
    r = CliRunner().invoke(app, ["probe", "worker", "--live"])
    assert r.exit_code == 1
    why = f"liveness file {live_env} missing: not started yet, or not turning"
    assert r.output.strip() == f"vlmq probe: {why}"
    touch(str(live_env))
    r = CliRunner().invoke(app, ["probe", "worker", "--live"])
    assert r.exit_code == 0 and r.output.startswith("ok: alive"), r.output


def test_the_command_wants_exactly_one_of_live_and_ready() -> None:
    assert CliRunner().invoke(app, ["probe", "worker"]).exit_code == 2
    assert CliRunner().invoke(app, ["probe", "worker", "--live", "--ready"]).exit_code == 2
