"""The engine's own account of a run, the same for the raw engine and the system: vLLM's per-request
timestamps (``workers.inference.vllm_engine.request_timing``: queued, scheduled, first and last token)
and its throughput line (prompt and generation tokens/s, requests running and waiting), every second.

Both are on only when the statistics are (``VLMQ_MODEL__LOG_STATS_SECONDS``; the raw engine's
``disable_log_stats=False``), for both sides of a comparison alike.
"""

from __future__ import annotations

import json
import logging
import re
import statistics
import time
from collections.abc import Iterable
from typing import Any

from workers.inference.vllm_engine import LOOP, TIMING

_STATS = re.compile(
    r"Avg prompt throughput: ([\d.]+) tokens/s, Avg generation throughput: ([\d.]+) tokens/s, "
    r"Running: (\d+) reqs, Waiting: (\d+) reqs"
)
# vLLM's log line starts "INFO 11-25 08:40:01.123 [loggers.py:...]" (local time; no year).
_STAMP = re.compile(r"^\w+ (\d\d-\d\d \d\d:\d\d:\d\d)(\.\d+)? ")


def summary(timings: list[dict[str, Any]], t0_epoch: float) -> dict[str, Any]:
    """Seconds after ``t0_epoch`` at which the first, median and last request reached each stage, and
    the mean time a request spent waiting, in prefill (first token) and decoding. With the engine
    core's own clock (``queued_at``...: ``request_timing``), also when each request reached the engine
    core (``queued``; ``input_lag_s``: after the front end took it) and, in the GPU worker, how long
    its output took to reach the task (``delivery_lag_s``)."""
    if not timings:
        return {}
    out: dict[str, Any] = {"requests": len(timings)}
    stages = {"arrived": None, "scheduled": "scheduled_s", "first_token": "first_token_s"}
    for stage, key in {**stages, "done": "last_token_s"}.items():
        out[stage] = _spread([t["arrival"] + (t[key] or 0 if key else 0) - t0_epoch for t in timings])
    for name, a, b in (("wait", None, "scheduled_s"), ("prefill", "scheduled_s", "first_token_s"),
                       ("decode", "first_token_s", "last_token_s")):  # fmt: skip
        spans = [(t[b] or 0) - ((t[a] or 0) if a else 0) for t in timings]
        out[f"mean_{name}_s"] = round(statistics.fmean(spans), 2)
    clocked = [t for t in timings if t.get("queued_at")]
    if clocked:  # the engine core's own times: no assumption that a request is queued as it arrives
        for stage, key in (("queued", "queued_at"), ("first_token", "first_token_at"), ("done", "done_at")):
            out[stage] = _spread([(t[key] or t["queued_at"]) - t0_epoch for t in clocked])
        out["input_lag_s"] = _lag([t["queued_at"] - t["arrival"] for t in clocked])
    delivered = [t for t in timings if "delivered" in t]
    if delivered:  # the GPU worker's own log: when each output reached the task's coroutine
        out["delivered"] = _spread([t["delivered"] - t0_epoch for t in delivered])
        out["delivery_lag_s"] = _lag([t["delivered"] - _done(t) for t in delivered])
    return out


def _done(t: dict[str, Any]) -> float:
    """When the engine core finished the request (its own clock when logged, else from its arrival)."""
    return float(t.get("done_at") or t["arrival"] + (t["last_token_s"] or 0))


def _lag(seconds: list[float]) -> dict[str, float]:
    return {"mean": round(statistics.fmean(seconds), 2), "max": round(max(seconds), 2)}


def _spread(seconds: list[float]) -> dict[str, float]:
    at = sorted(seconds)
    return {"first": round(at[0], 2), "median": round(at[len(at) // 2], 2), "last": round(at[-1], 2)}


def stats_series(lines: Iterable[tuple[float, str]], t0_epoch: float, t1_epoch: float) -> list[list[float]]:
    """[[seconds after t0, prompt tok/s, generation tok/s, running, waiting]] for the throughput lines
    logged between ``t0_epoch`` and ``t1_epoch``."""
    series = []
    for when, message in lines:
        m = _STATS.search(message)
        if m and t0_epoch <= when <= t1_epoch + 1:
            series.append([round(when - t0_epoch, 1), float(m[1]), float(m[2]), int(m[3]), int(m[4])])
    return series


def loop_series(lines: Iterable[str], t0_epoch: float, t1_epoch: float) -> list[list[float]]:
    """[[seconds after t0, lag ms, loop thread's CPU share, process CPU in cores, requests inside the
    engine's backlog, waiting for a place]] from the engine's event-loop lines
    (``VllmEngine._log_stats``) logged between ``t0_epoch`` and ``t1_epoch``."""
    series = []
    for line in lines:
        if LOOP in line:
            r = json.loads(line.split(LOOP, 1)[1])
            if t0_epoch <= r["at"] <= t1_epoch + 1:
                series.append([round(r["at"] - t0_epoch, 1), r["lag_ms"], r["loop_cpu"], r["process_cpu"],
                               r.get("inside", -1), r.get("waiting", -1)])  # fmt: skip
    return series


def read_log(text: str) -> tuple[list[dict[str, Any]], list[tuple[float, str]]]:
    """A worker's log: its engine timing records, and its stamped vLLM lines."""
    timings, stamped = [], []
    year = time.localtime().tm_year
    for line in text.splitlines():
        if TIMING in line:
            timings.append(json.loads(line.split(TIMING, 1)[1]))
        elif (m := _STAMP.match(line)) is not None:
            when = time.mktime(time.strptime(f"{year}-{m[1]}", "%Y-%m-%d %H:%M:%S")) + float(m[2] or 0)
            stamped.append((when, line))
    return timings, stamped


class Captured(logging.Handler):
    """In-process (the raw engine, vlmq's engine alone): log records as (time, message), vLLM's and
    those of the other ``loggers`` named."""

    def __init__(self, *loggers: str) -> None:
        super().__init__(logging.INFO)
        self.lines: list[tuple[float, str]] = []
        self._loggers = [logging.getLogger(name) for name in ("vllm", *loggers)]
        self._levels: list[int] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.created, record.getMessage()))

    def __enter__(self) -> Captured:
        for logger in self._loggers:
            self._levels.append(logger.level)
            logger.setLevel(min(logger.getEffectiveLevel(), logging.INFO))  # the throughput line is INFO
            logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        for logger, level in zip(self._loggers, self._levels, strict=True):
            logger.removeHandler(self)
            logger.setLevel(level)
