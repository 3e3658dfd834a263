"""Prometheus metrics of the running system: the API's view of queues and states, and each worker's
counters (the prep worker's come from its pool children, summed by the multiprocess exporter)."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import METRICS_TOKEN
from tests.e2e.test_pipeline import KEY, wait_done
from tests.fixtures.models import taught_pdf

pytestmark = pytest.mark.slow
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str, token: str | None = None) -> Samples:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = httpx.get(url, timeout=10, headers=headers)
    assert r.status_code == 200, r.text
    text = r.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_worker_and_api_metrics(running_system: str, metrics_ports: dict[str, int]) -> None:
    gpu_url = f"http://127.0.0.1:{metrics_ports['worker-gpu']}/metrics"
    prep_url = f"http://127.0.0.1:{metrics_ports['worker-prep']}/metrics"
    gpu_before, prep_before = scrape(gpu_url), scrape(prep_url)
    files = [
        ("file", ("metrics.pdf", taught_pdf(), "application/pdf")),
        ("file", ("broken.pdf", b"%PDF-1.7\n1 0 obj <<", "application/pdf")),
    ]
    r = httpx.post(f"{running_system}/v1/jobs", files=files, headers=KEY, timeout=30)
    assert r.status_code == 202, r.text
    job = wait_done(running_system, r.json()["id"])
    assert job["page_counts"]["completed"] == 3

    gpu, prep = scrape(gpu_url), scrape(prep_url)

    def delta(now: Samples, before: Samples, name: str, **labels: str) -> float:
        return value(now, name, **labels) - value(before, name, **labels)

    assert delta(gpu, gpu_before, "vlmq_pages_total") == 3
    assert delta(gpu, gpu_before, "vlmq_output_tokens_total") > 0
    assert delta(gpu, gpu_before, "vlmq_engine_busy_seconds_total") > 0
    assert 0 < value(gpu, "vlmq_engine_busy_fraction") <= 1
    assert value(gpu, "vlmq_engine_requests_in_flight") == 0
    assert delta(prep, prep_before, "vlmq_item_failures_total", reason="corrupt_media") == 1

    api = scrape(f"{running_system}/metrics", METRICS_TOKEN)
    assert value(api, "vlmq_metrics_source_up", source="redis") == 1
    assert value(api, "vlmq_metrics_source_up", source="postgres") == 1
    assert ("vlmq_queue_depth", (("queue", "gpu"),)) in api and (
        "vlmq_queue_depth",
        (("queue", "prep"),),
    ) in api
    assert value(api, "vlmq_jobs", status="completed") >= 1
    assert ("vlmq_items", (("status", "running"),)) in api
