"""Faults at random moments of the run, one at a time, each undone after a few wall seconds as a
supervisor or an operator would: kill -9 of a prep worker, of the GPU worker, of beat (then restarted);
Redis FLUSHALL; a Postgres restart; S3 down (its proxy refuses connections). Plus the outage: the GPU
worker down for longer than a job's window, so that the jobs waiting for it expire."""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from tests.soak.config import DAY, SoakConfig
from tests.soak.system import System

log = logging.getLogger(__name__)
KINDS = ("kill9_prep", "kill9_gpu", "kill9_beat", "redis_flushall", "postgres_restart", "s3_down")
DOWN_S = {  # wall seconds before the fault is undone: (least, most)
    "kill9_prep": (1.0, 4.0),
    "kill9_gpu": (1.0, 4.0),
    "kill9_beat": (1.0, 6.0),
    "redis_flushall": (0.0, 0.0),
    "postgres_restart": (2.0, 6.0),
    "s3_down": (3.0, 15.0),
}


@dataclass
class Fault:
    at: float  # simulated seconds from the start
    kind: str
    down_s: float
    until: float | None = None  # monotonic wall time at which it is undone
    undo: Callable[[], None] | None = None


def plan(cfg: SoakConfig, rng: random.Random) -> list[Fault]:
    """``cfg.faults`` faults, every kind at least once, at random moments of the workload (away from
    the outage, so each one hits a working system)."""
    kinds = [KINDS[i % len(KINDS)] for i in range(max(cfg.faults, len(KINDS)))]
    rng.shuffle(kinds)
    out_lo, out_hi = cfg.outage_day * DAY, cfg.outage_day * DAY + cfg.outage_s
    moments: list[float] = []
    while len(moments) < len(kinds):
        t = rng.uniform(0.02, 0.97) * cfg.days * DAY
        if not out_lo - 3600 < t < out_hi + 3600:
            moments.append(t)
    return [Fault(t, k, rng.uniform(*DOWN_S[k])) for t, k in zip(sorted(moments), kinds, strict=True)]


class Faults:
    def __init__(self, system: System, cfg: SoakConfig, rng: random.Random) -> None:
        self.system, self.rng = system, rng
        self.todo = plan(cfg, rng)
        self.current: Fault | None = None
        self.done: Counter[str] = Counter()
        self.log: list[str] = []

    def tick(self, elapsed: float) -> None:
        """Undo the current fault once its time is up; start the next one that is due."""
        if self.current is not None and time.monotonic() >= (self.current.until or 0):
            self._end(self.current)
        if self.current is None and self.todo and self.todo[0].at <= elapsed:
            self._start(self.todo.pop(0), elapsed)

    def finish(self) -> None:
        if self.current is not None:
            self._end(self.current)

    def _start(self, f: Fault, elapsed: float) -> None:
        f.undo = getattr(self, f"_{f.kind}")()
        f.until = time.monotonic() + f.down_s
        self.current = f
        self.log.append(f"{elapsed / 3600:7.2f} h  {f.kind} ({f.down_s:.1f} s)")
        log.info("fault: %s for %.1f s", f.kind, f.down_s)

    def _end(self, f: Fault) -> None:
        if f.undo is not None:
            f.undo()
        self.done[f.kind] += 1
        self.current = None

    # -- the faults: each does its harm and returns what undoes it ---------------------------------

    def _kill9_prep(self) -> Callable[[], None]:
        n = self.rng.randrange(len(self.system.prep_names()))
        self.system.stack.kill9_group(self.system.prep_names()[n])
        return lambda: self.system.stack.start_prep(n, 1) and None

    def _kill9_gpu(self) -> Callable[[], None]:
        self.system.stack.kill9_group("worker-gpu")
        return self.system.start_gpu

    def _kill9_beat(self) -> Callable[[], None]:
        self.system.stack.kill9_group("beat")
        return lambda: self.system.stack.start("beat", "beat") and None

    def _redis_flushall(self) -> Callable[[], None]:
        client = self.system.stack.redis()
        try:
            client.flushall()  # every queued and unacknowledged message is gone
        finally:
            client.close()
        return lambda: None

    def _postgres_restart(self) -> Callable[[], None]:
        self.system.pg.stop()  # fast shutdown: every connection of every process is cut
        return self.system.pg.start

    def _s3_down(self) -> Callable[[], None]:
        self.system.stack.s3.down()
        return self.system.stack.s3.up


SWEEPS_BEFORE_RETURN_S = 4.0  # two of the soak's sweep intervals (config.stack_env: 2 s)


class Outage:
    """The GPU worker killed at ``cfg.outage_day`` and started again ``cfg.outage_s`` later (simulated):
    longer than a job's window, so the jobs submitted before it expire, as they should."""

    def __init__(self, system: System, cfg: SoakConfig) -> None:
        self.system = system
        self.start, self.end = cfg.outage_day * DAY, cfg.outage_day * DAY + cfg.outage_s
        self.state = "before"

    def tick(self, elapsed: float, may_start: bool = True) -> bool:
        """True while the outage lasts (it starts only while the workload runs, not in the drain)."""
        if self.state == "before" and may_start and elapsed >= self.start:
            self.system.stack.kill9_group("worker-gpu")
            self.state = "on"
        elif self.state == "on" and elapsed >= self.end:
            # A real outage of hours holds thousands of sweeps; this one passes in a few turns of 2
            # simulated hours, between which a sweep (every 2 s of wall time) may not fall. Without a
            # sweep with the clock past the windows that closed during it, whether a job expired was a
            # race with the GPU's return (a CI run saw none expire). Two sweep intervals, then the GPU.
            time.sleep(SWEEPS_BEFORE_RETURN_S)
            self.system.start_gpu()
            self.state = "over"
        return self.state == "on"
