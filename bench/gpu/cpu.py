"""How many of the machine's cores were busy, sampled from /proc/stat while a run goes on: the ramp of a
system run (upload, rendering, fetching, preprocessing) is CPU work spread over every process."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import TracebackType

STAT = Path("/proc/stat")


def _times(text: str) -> tuple[int, int]:
    """(busy, total) jiffies of all cores together, from /proc/stat's first line."""
    fields = [int(x) for x in text.splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


class BusyCores:
    """``with BusyCores(cores) as b: ...``; then ``b.series``: [[seconds after start, busy cores]]."""

    def __init__(self, cores: int, every_s: float = 0.5, stat: Path = STAT) -> None:
        self.cores, self.every_s, self.stat = cores, every_s, stat
        self.series: list[list[float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="busy-cores", daemon=True)

    def __enter__(self) -> BusyCores:
        self._thread.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        t0 = time.monotonic()
        busy0, total0 = _times(self.stat.read_text())
        stopped = False
        while not stopped:  # a last reading when stopped: a short run gets one too
            stopped = self._stop.wait(self.every_s)
            busy, total = _times(self.stat.read_text())
            if total > total0:
                share = (busy - busy0) / (total - total0)
                self.series.append([round(time.monotonic() - t0, 1), round(share * self.cores, 1)])
            busy0, total0 = busy, total
