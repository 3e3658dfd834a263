"""Memory of every process of the system, per simulated day: its peak, to see growth across days.

A process is counted with its children (a prep worker's pool, the GPU worker's result writers,
Postgres' backends), by PSS: shared pages split between the processes that share them, so Postgres'
shared buffers count once, not once per backend. A restarted process (a kill -9, a deploy) starts
again from nothing: growth is judged on the peaks of whole days.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict

import psutil

from tests.soak.system import System

MB = 1024 * 1024
# Growth a day's peak may show over the first full day's before it is reported: caches fill, pools open.
GROWTH_MB, GROWTH_SHARE = 48, 0.25


def _pss(p: psutil.Process) -> int:
    with contextlib.suppress(psutil.Error):
        info = p.memory_full_info()
        return int(getattr(info, "pss", info.rss))
    return 0


def _cpu(p: psutil.Process) -> float:
    with contextlib.suppress(psutil.Error):
        t = p.cpu_times()
        return float(t.user + t.system)
    return 0.0


class Memory:
    def __init__(self, system: System) -> None:
        self.system = system
        self.peaks: dict[str, dict[int, int]] = defaultdict(dict)  # name -> day -> peak bytes
        self.cpu: dict[str, dict[int, float]] = defaultdict(dict)  # name -> pid -> CPU seconds

    def sample(self, day: int) -> None:
        for name, procs in self.system.trees().items():
            total = sum(_pss(p) for p in procs)
            self.peaks[name][day] = max(self.peaks[name].get(day, 0), total)
            for p in procs:
                self.cpu[name][p.pid] = max(self.cpu[name].get(p.pid, 0.0), _cpu(p))
        me, name = psutil.Process(), "soak (this process)"
        self.peaks[name][day] = max(self.peaks[name].get(day, 0), _pss(me))
        self.cpu[name][me.pid] = _cpu(me)

    def report(self) -> dict[str, dict[str, object]]:
        """Per process: its peak in MB, the peak of each day, and whether it grew across days."""
        out: dict[str, dict[str, object]] = {}
        for name, days in sorted(self.peaks.items()):
            by_day = {d: round(b / MB, 1) for d, b in sorted(days.items())}
            cpu = round(sum(self.cpu[name].values()))
            out[name] = {
                "peak_mb": max(by_day.values()),
                "by_day_mb": by_day,
                "grew": _grew(by_day),
                "cpu_s": cpu,
            }
        return out


def _grew(by_day: dict[int, float]) -> bool:
    """The last full day's peak above the first full day's by more than the allowance. The first and
    the last day are partial (start, drain): compared only when there are 3 days or more."""
    days = sorted(by_day)
    if len(days) < 4:
        return False
    first, last = by_day[days[1]], by_day[days[-2]]
    return last > first * (1 + GROWTH_SHARE) + GROWTH_MB
