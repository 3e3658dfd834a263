"""A job through the whole system with ``VLMQ_MODEL__ENGINE=openai``: the API and workers as separate
processes, the inference worker sending its pages to a real OpenAI-compatible server process
(tests/fixtures/openai_server.py, scripted like ``vllm serve --reasoning-parser glm45``), with the
thinking budget continued over the API; pages as data URLs, and as presigned URLs of prep's own objects.

Its own database and Redis prefix: the e2e package's system (the transformers engine) must not take
this system's messages, nor this one take its."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from api.cli.servers import free_port
from jobs.adapters.storage import S3BlobStore
from jobs.config import Settings
from tests.conftest import RUN_ID, migrated_database
from tests.e2e.test_metrics import scrape, value
from tests.e2e.test_pipeline import KEY, results_by_custom_id, wait_done
from tests.fixtures import openai_server
from tests.fixtures.models import taught_pdf
from tests.system import running_system as start_system

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def openai_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    proc = openai_server.start(port, tmp_path_factory.mktemp("openai-e2e") / "server.log", "budget_split")
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.stop()


@pytest.fixture(scope="module", params=["data_url", "presigned"])
def openai_system(
    request: pytest.FixtureRequest, service_env: dict[str, str], openai_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, int, str]]:  # fmt: skip
    gpu_metrics, media = free_port(), request.param
    with migrated_database(f"vlmq_test_{RUN_ID}_openai_{media}") as db:
        env = {
            **service_env,
            "VLMQ_DB__URL": db,
            "VLMQ_REDIS__KEY_PREFIX": f"{service_env['VLMQ_REDIS__KEY_PREFIX']}openai-{media}:",
            "VLMQ_MODEL__ENGINE": "openai",
            "VLMQ_MODEL__OPENAI__MEDIA": media,
            "VLMQ_MODEL__OPENAI__BASE_URLS": openai_url,
            "VLMQ_MODEL__OPENAI__API_KEY": "sk-e2e",
            "VLMQ_MODEL__OPENAI__SERVED_MODEL": openai_server.MODEL,
            "VLMQ_MODEL__OPENAI__BACKOFF_BASE_S": "0.05",
            "VLMQ_MODEL__THINKING_BUDGET": "10",
            "VLMQ_MODEL__MAX_NEW_TOKENS": "100",
            "VLMQ_LIMITS__BATCH_SIZE": "2",
        }
        logs = tmp_path_factory.mktemp("openai-e2e-logs")
        with start_system(env, logs, metrics_ports={"worker-gpu": gpu_metrics}) as (base, _):
            yield base, gpu_metrics, media


def test_a_pdf_job_runs_on_an_openai_compatible_server(
    openai_system: tuple[str, int, str], openai_url: str, settings: Settings
) -> None:
    base, gpu_metrics, media = openai_system
    control = openai_url.removesuffix("/v1") + "/control"
    httpx.post(control, json={"mode": "budget_split"}, timeout=5).raise_for_status()  # clears its log
    files = [("file", ("report.pdf", taught_pdf(), "application/pdf"))]
    r = httpx.post(f"{base}/v1/jobs", files=files, headers=KEY, timeout=30)
    assert r.status_code == 202, r.text
    job = wait_done(base, r.json()["id"], timeout=120)

    assert job["status"] == "completed"
    assert job["page_counts"]["completed"] == 3
    pages = results_by_custom_id(base, job["id"])["report.pdf"]
    assert [p["page"] for p in pages] == [1, 2, 3]
    for p in pages:  # the same result a raw <think>…</think><answer>… reply would have given
        assert p["status"] == "succeeded", p
        assert p["answer"].startswith("images=1 sizes=") and p["boxes"], p
        assert p["reasoning"].split() == [f"step{i}" for i in range(10)], p
        assert "thinking_budget_reached" in p["flags"] and p["model_id"] == openai_server.MODEL, p
    log = httpx.get(openai_url.removesuffix("/v1") + "/log", timeout=5).json()
    assert any(q["body"].get("continue_final_message") for q in log["requests"])
    assert all(q["authorization"] == "Bearer sk-e2e" for q in log["requests"])
    sources = {i["source"] for q in log["requests"] for i in q["images"]}
    if media == "presigned":  # prep's own pages, none written again
        pages = f"{settings.s3.endpoint_url}/{settings.s3.bucket}/media/"
        assert len(sources) == 3 and all(s.startswith(pages) for s in sources), sources
        s3 = S3BlobStore(settings).client
        assert s3.list_objects_v2(Bucket=settings.s3.bucket, Prefix="openai-media/")["KeyCount"] == 0
    else:
        assert sources == {"data"}
    samples = scrape(f"http://127.0.0.1:{gpu_metrics}/metrics")
    endpoint = openai_url.removesuffix("/v1")
    assert value(samples, "vlmq_openai_request_seconds_count", endpoint=endpoint) >= 6  # 3 pages, 2 passes
