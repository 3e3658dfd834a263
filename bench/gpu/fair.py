"""Small jobs beside a bulk job on the GPU (issue 24): 1-page jobs of another tenant submitted every few
seconds while a bulk job runs, each job's time from submitted to completed read from the API's own
timestamps (``created_at`` -> ``completed_at``), and the same 1-page job on the idle system first.
With ``video_every`` = k, every k-th small job is a 3 s video clip instead (the mixed run), timed apart.

The CPU twin is bench/fairness.py; this one runs inside bench.gpu.system's stack (``--small-every``)."""

from __future__ import annotations

import statistics
import tempfile
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from api.cli.client import Client
from bench.pages import make_pdf

SMALL_KEY = "small-key"  # a second tenant: bench.gpu.system's API keys carry both
CLIP = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "clip-3s.mp4"  # 3 s, 64 x 48


def idle(base: str, n: int = 3, video: bool = False) -> list[float]:
    """``n`` 1-page jobs (or 3 s videos) one after another on the idle system: each one's seconds."""
    with Client(base, SMALL_KEY, timeout=300) as client:
        jobs = (_submit(client, 800_000 + i, video)["id"] for i in range(n))
        return [_seconds(client, client.wait(j, poll=0.05, timeout=600)) for j in jobs]


class Arrivals:
    """While the block runs, a 1-page job every ``every`` seconds; ``times()`` waits for all of them."""

    def __init__(self, base: str, every: float, video_every: int = 0) -> None:
        self.base, self.every, self.video_every = base, every, video_every
        self.ids: list[str] = []
        self.videos: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._submit_all, daemon=True)

    def __enter__(self) -> Arrivals:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _submit_all(self) -> None:
        with Client(self.base, SMALL_KEY, timeout=300) as client:
            while not self._stop.wait(self.every):
                n = len(self.ids) + 1
                video = bool(self.video_every) and n % self.video_every == 0
                self.ids.append(_submit(client, 900_000 + n, video)["id"])
                if video:
                    self.videos.add(self.ids[-1])

    def times(self) -> tuple[list[float], list[float]]:
        """Seconds to completed of the 1-page jobs and of the video jobs, each in the order submitted."""
        with Client(self.base, SMALL_KEY, timeout=300) as client:
            took = {j: _seconds(client, client.wait(j, poll=0.2, timeout=1800)) for j in self.ids}
        pages = [took[j] for j in self.ids if j not in self.videos]
        return pages, [took[j] for j in self.ids if j in self.videos]


def summary(seconds: list[float]) -> dict[str, Any]:
    if not seconds:
        return {"n": 0}
    cut = statistics.quantiles(seconds, n=20, method="inclusive") if len(seconds) > 1 else seconds * 19
    return {"n": len(seconds), "p50": round(statistics.median(seconds), 2), "p95": round(cut[18], 2),
            "max": round(max(seconds), 2)}  # fmt: skip


def _submit(client: Client, seed: int, video: bool = False) -> dict[str, Any]:
    if video:
        return client.submit_files([CLIP])
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"small-{seed}.pdf"
        path.write_bytes(make_pdf(1, seed=seed))
        return client.submit_files([path])


def _seconds(client: Client, job: dict[str, Any]) -> float:
    if job.get("status") != "completed":
        job = client.job(job["id"])
    start, end = (datetime.fromisoformat(job[k]) for k in ("created_at", "completed_at"))
    return round((end - start).total_seconds(), 3)
