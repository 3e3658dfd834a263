"""A worker's Prometheus exporter: ``vlmq worker --metrics-port N`` (or VLMQ_METRICS__WORKER_PORT).

Why prometheus_client's multiprocess mode rather than one exporter per process: a prep worker is a
Celery prefork pool whose children do the work (and fail items); they cannot each bind the port, and
their counters must add up. Every process of the worker writes its samples to files in one
directory; the exporter in the main process sums them on each scrape. The mode is chosen when
prometheus_client is imported, so :func:`use_multiprocess_dir` runs before anything imports it.

The engine busy fraction is read from the process's BusyMeter at scrape time: the inference worker
runs its tasks in the main process (solo or thread pool), where the exporter is.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path


def use_multiprocess_dir(configured: str | None) -> str:
    """Point prometheus_client at a clean samples directory. Call before prometheus_client is imported."""
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before its multiprocess directory was set")
    path = Path(configured or tempfile.mkdtemp(prefix="vlmq-metrics-"))
    if not configured:  # ours alone: gone with the worker (pool children leave through os._exit)
        atexit.register(shutil.rmtree, path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("*.db"):  # samples of an earlier run would be added to ours
        old.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    return str(path)


def serve(port: int, host: str, busy_window_s: float) -> None:
    """Start the exporter thread: every process's samples, plus this process's engine busy fraction."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.multiprocess import MultiProcessCollector
    from prometheus_client.registry import Collector

    from workers.inference.busy import ENGINE_METER

    ENGINE_METER.window_s = busy_window_s

    class EngineCollector(Collector):
        def collect(self) -> Iterator[GaugeMetricFamily]:
            yield GaugeMetricFamily(
                "vlmq_engine_busy_fraction",
                f"Share of the last {busy_window_s:g} s with a request in the engine",
                value=ENGINE_METER.fraction(),
            )
            yield GaugeMetricFamily(
                "vlmq_engine_requests_in_flight", "Requests in the engine now", value=ENGINE_METER.in_flight
            )

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    registry.register(EngineCollector())
    start_http_server(port, addr=host, registry=registry)
