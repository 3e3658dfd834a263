"""The benchmark's engine account: vLLM's per-request timestamps and its throughput lines, read the same
way from the raw engine (records in-process) and from the GPU worker's log."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bench.gpu.engine_log import Captured, loop_series, read_log, stats_series, summary
from bench.gpu.raw import doc_seeds
from workers.inference.vllm_engine import LOOP, TIMING, request_timing

T0 = time.mktime((time.localtime().tm_year, 6, 1, 12, 0, 0, 0, 0, -1))  # vLLM's log stamps have no year


def _out(rid: str, arrival: float, queued: float, sched: float, first: float, last: float) -> SimpleNamespace:
    metrics = SimpleNamespace(
        arrival_time=arrival,
        queued_ts=queued,
        scheduled_ts=sched,
        first_token_ts=first,
        last_token_ts=last,
        num_generation_tokens=1024,
    )
    return SimpleNamespace(request_id=rid, metrics=metrics, prompt_token_ids=[1] * 1600)


def _queued_on_arrival(out: SimpleNamespace) -> dict[str, Any] | None:
    """The request reached the engine core the moment the front end took it (no input lag)."""
    return request_timing(out, clock=out.metrics.arrival_time - out.metrics.queued_ts)


def test_request_timing_is_relative_to_the_engine_queue_and_on_the_wall_clock() -> None:
    # The engine core's monotonic clock reads 50.0 when the wall clock reads T0 + 2: queued 1 s late.
    t = request_timing(_out("a", T0 + 1, 50.0, 50.5, 52.0, 90.0), clock=T0 + 2 - 50.0)
    assert t == {"id": "a", "arrival": T0 + 1, "scheduled_s": 0.5, "first_token_s": 2.0,
                 "last_token_s": 40.0, "queued_at": T0 + 2, "first_token_at": T0 + 4, "done_at": T0 + 42,
                 "prompt_tokens": 1600, "output_tokens": 1024}  # fmt: skip
    # Statistics off: vLLM attaches no metrics, and there is nothing to report.
    assert request_timing(SimpleNamespace(request_id="b", metrics=None, prompt_token_ids=[])) is None


def test_summary_gives_each_stage_after_the_upload() -> None:
    timings = [
        _queued_on_arrival(_out("a", T0 + 1, 10.0, 10.0, 11.0, 51.0)),
        _queued_on_arrival(_out("b", T0 + 2, 20.0, 21.0, 23.0, 62.0)),
        _queued_on_arrival(_out("c", T0 + 4, 30.0, 33.0, 36.0, 76.0)),
    ]
    s = summary([t for t in timings if t], T0)
    assert s["requests"] == 3
    assert s["arrived"] == s["queued"] == {"first": 1.0, "median": 2.0, "last": 4.0}
    assert s["scheduled"] == {"first": 1.0, "median": 3.0, "last": 7.0}
    assert s["done"] == {"first": 42.0, "median": 44.0, "last": 50.0}
    assert (s["mean_wait_s"], s["mean_prefill_s"], s["mean_decode_s"]) == (1.33, 2.0, 39.67)
    assert s["input_lag_s"] == {"mean": 0.0, "max": 0.0}
    assert "delivered" not in s  # the raw engine's outputs all come back when generate returns
    assert summary([], T0) == {}


def test_summary_tells_the_way_in_from_the_way_out() -> None:
    # a reached the engine core 3 s after the front end took it (its tensors were in transit), and the
    # engine finished it at T0 + 45, not T0 + 42 as its arrival would suggest; the worker got it at
    # T0 + 46: 1 s on the way out, not 4. b: no lag in, 3 s out.
    a = request_timing(_out("a", T0 + 1, 10.0, 10.0, 11.0, 51.0), clock=T0 + 4 - 10.0)
    b = _queued_on_arrival(_out("b", T0 + 2, 20.0, 21.0, 23.0, 62.0))
    timings = [{**t, "delivered": T0 + at} for t, at in ((a, 46.0), (b, 47.0)) if t]
    s = summary(timings, T0)
    assert s["done"] == {"first": 44.0, "median": 45.0, "last": 45.0}
    assert s["input_lag_s"] == {"mean": 1.5, "max": 3.0}
    assert s["delivered"] == {"first": 46.0, "median": 47.0, "last": 47.0}
    assert s["delivery_lag_s"] == {"mean": 2.0, "max": 3.0}
    # Lines logged before the engine's own clock was: from the arrival, as before.
    old = [{k: v for k, v in t.items() if not k.endswith("_at")} for t in timings]
    assert summary(old, T0)["delivery_lag_s"] == {"mean": 3.5, "max": 4.0}


def test_the_worker_log_and_in_process_records_give_the_same_series() -> None:
    stamp = time.strftime("%m-%d %H:%M:%S", time.localtime(T0 + 3))
    line = (
        "Engine 000: Avg prompt throughput: 40960.0 tokens/s, Avg generation throughput: 6144.5 tokens/s, "
        "Running: 256 reqs, Waiting: 12 reqs, GPU KV cache usage: 41.0%"
    )
    timing = _queued_on_arrival(_out("u1", T0 + 1, 5.0, 5.0, 6.0, 46.0))
    log = "\n".join([
        "[2026-11-25 08:00:00,000: INFO/MainProcess] celery@gpu ready.",
        f"INFO {stamp}.250 [loggers.py:270] {line}",
        f"[2026-11-25 08:00:05,000: INFO/MainProcess] {TIMING} {json.dumps(timing)}",
    ])  # fmt: skip
    timings, lines = read_log(log)
    assert timings == [timing]
    assert stats_series(lines, T0, T0 + 10) == [[3.2, 40960.0, 6144.5, 256, 12]]
    assert stats_series(lines, T0 + 20, T0 + 30) == []  # another run's window

    with Captured() as cap:
        logging.getLogger("vllm.v1.metrics.loggers").info(line)
    assert [row[1:] for row in stats_series(cap.lines, cap.lines[0][0] - 1, cap.lines[0][0])] == [
        [40960.0, 6144.5, 256, 12]
    ]


def test_the_event_loops_lines_give_its_series_in_the_runs_window() -> None:
    rec = {
        "at": T0 + 2.04,
        "lag_ms": 12.5,
        "loop_cpu": 0.61,
        "process_cpu": 1.8,
        "inside": 512,
        "waiting": 40,
    }
    lines = [
        f"[2026-11-25 08:00:05,000: INFO/MainProcess] {LOOP} {json.dumps(rec)}",
        f"[2026-11-25 08:00:05,000: INFO/MainProcess] {LOOP} {json.dumps({**rec, 'at': T0 + 60})}",
        "[2026-11-25 08:00:05,000: INFO/MainProcess] something else",
    ]
    assert loop_series(lines, T0, T0 + 10) == [[2.0, 12.5, 0.61, 1.8, 512, 40]]
    with Captured("workers.inference.vllm_engine") as cap:  # in process: vlmq's engine alone
        logging.getLogger("workers.inference.vllm_engine").info("%s %s", LOOP, json.dumps(rec))
    assert loop_series([m for _, m in cap.lines], T0, T0 + 10) == [[2.0, 12.5, 0.61, 1.8, 512, 40]]
    old = {k: v for k, v in rec.items() if k not in ("inside", "waiting")}  # logged before the backlog was
    assert loop_series([f"{LOOP} {json.dumps(old)}"], T0, T0 + 10) == [[2.0, 12.5, 0.61, 1.8, -1, -1]]
    assert not logging.getLogger("workers.inference.vllm_engine").handlers  # taken off again


def test_runs_in_one_lease_never_share_a_document() -> None:
    assert doc_seeds([256, 1024, 256], 8) == [0, 32, 160]


def test_busy_cores_reads_the_share_of_all_cores_in_use(tmp_path: Path) -> None:
    from bench.gpu.cpu import BusyCores, _times

    # user nice system idle iowait irq softirq steal: 300 busy of 400 jiffies
    assert _times("cpu  100 0 200 90 10 0 0 0 0 0\ncpu0 1 2 3 4\n") == (300, 400)
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 100 200 0 0 0 0\n")
    with BusyCores(16, every_s=0.05, stat=stat) as b:
        time.sleep(0.08)
        stat.write_text("cpu  400 0 100 300 0 0 0 0\n")  # +300 busy, +100 idle: 3/4 of 16 cores
        time.sleep(0.15)
    assert [row[1] for row in b.series] == [12.0]  # readings where nothing moved give no row


def test_the_tail_profile_samples_mid_run_and_from_the_first_finished_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench.gpu.system import TailProfile

    # A stand-in py-spy on PATH: it records its arguments where the profile would go.
    fake = tmp_path / "bin" / "py-spy"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\nout=""\nwhile [ $# -gt 0 ]; do [ "$1" = --output ] && out=$2; shift; done\n'
                    'printf "%s\\n" "sampled" > "$out"\n')  # fmt: skip
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    log = tmp_path / "worker.log"
    log.write_text(f"{TIMING} " + json.dumps({"from": "an earlier run"}) + "\n")  # before: ignored
    worker = SimpleNamespace(log_path=log, proc=SimpleNamespace(pid=os.getpid()))
    out = tmp_path / "gpu.pyspy"
    with TailProfile(worker, out, seconds=1, mid_s=0.2) as spy:
        time.sleep(0.6)
        assert [Path(p).name for p in spy.outputs] == ["gpu.pyspy.mid.threads", "gpu.pyspy.mid.gil"]
        with log.open("a") as f:
            f.write("[... INFO/MainProcess] engine loop {}\n")
            f.write(f"[... INFO/MainProcess] {TIMING} " + json.dumps({"id": "u1"}) + "\n")
        deadline = time.monotonic() + 5
        while len(spy.outputs) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert [Path(p).name for p in spy.outputs][2:] == ["gpu.pyspy.tail.threads", "gpu.pyspy.tail.gil"]
    assert all(Path(p).read_text() == "sampled\n" for p in spy.outputs)  # each py-spy ran and finished
