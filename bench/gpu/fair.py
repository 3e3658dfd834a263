"""Small jobs beside a bulk job on the GPU (issue 24): 1-page jobs of another tenant submitted every few
seconds while a bulk job runs, each job's time from submitted to completed read from the API's own
timestamps (``created_at`` -> ``completed_at``), and the same 1-page job on the idle system first.

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


def idle(base: str, n: int = 3) -> list[float]:
    """``n`` 1-page jobs one after another on the idle system: each one's seconds to completed."""
    with Client(base, SMALL_KEY, timeout=300) as client:
        return [_seconds(client, client.wait(_submit(client, 800_000 + i)["id"], poll=0.05, timeout=600))
                for i in range(n)]  # fmt: skip


class Arrivals:
    """While the block runs, a 1-page job every ``every`` seconds; ``times()`` waits for all of them."""

    def __init__(self, base: str, every: float) -> None:
        self.base, self.every = base, every
        self.ids: list[str] = []
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
                self.ids.append(_submit(client, 900_000 + len(self.ids))["id"])

    def times(self) -> list[float]:
        with Client(self.base, SMALL_KEY, timeout=300) as client:
            return [_seconds(client, client.wait(j, poll=0.2, timeout=1800)) for j in self.ids]


def summary(seconds: list[float]) -> dict[str, Any]:
    if not seconds:
        return {"n": 0}
    cut = statistics.quantiles(seconds, n=20, method="inclusive") if len(seconds) > 1 else seconds * 19
    return {"n": len(seconds), "p50": round(statistics.median(seconds), 2), "p95": round(cut[18], 2),
            "max": round(max(seconds), 2)}  # fmt: skip


def _submit(client: Client, seed: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"small-{seed}.pdf"
        path.write_bytes(make_pdf(1, seed=seed))
        return client.submit_files([path])


def _seconds(client: Client, job: dict[str, Any]) -> float:
    if job.get("status") != "completed":
        job = client.job(job["id"])
    start, end = (datetime.fromisoformat(job[k]) for k in ("created_at", "completed_at"))
    return round((end - start).total_seconds(), 3)
