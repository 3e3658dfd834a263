"""The full GLM-4.1V-9B shape (random weights, AWQ 4-bit, from the GPU kit) served by the real GPU
worker behind the API: a multi-page PDF and an image, with a thinking budget small enough that every
result must be closed by the engine and still get an answer.

Random weights never close their reasoning, so each result shows the thinking-budget path end to end:
first pass stopped at the budget, ``</think><answer>`` appended, second pass for the answer, the split
stored apart, the flag on the result. Set VLMQ_TEST_FULL_MODEL to the checkpoint (and
VLMQ_TEST_FULL_QUANTIZATION, e.g. awq) to run it; it is skipped otherwise.
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from api.cli import ENGINE_READY
from api.cli.processes import wait_for_log
from bench.pages import documents
from tests.system import running_system
from workers.inference.budget import BUDGET_FLAG

MODEL = os.environ.get("VLMQ_TEST_FULL_MODEL")
KEY = {"Authorization": "Bearer test-key"}
BUDGET, MAX_NEW = 16, 48

pytestmark = pytest.mark.skipif(not MODEL, reason="VLMQ_TEST_FULL_MODEL (a 9B-shaped checkpoint) not set")


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 220, 240)).save(buf, "PNG")
    return buf.getvalue()


def test_full_model_through_the_worker_with_a_thinking_budget(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **os.environ,
        **service_env,
        "VLMQ_MODEL__ENGINE": "vllm",
        "VLMQ_MODEL__PATH": str(MODEL),
        "VLMQ_MODEL__MODEL_ID": "glm4v-9b-shape",
        "VLMQ_MODEL__MAX_MODEL_LEN": "8192",
        "VLMQ_MODEL__MAX_NEW_TOKENS": str(MAX_NEW),
        "VLMQ_MODEL__THINKING_BUDGET": str(BUDGET),
        "VLMQ_MODEL__READY_FILE": str(tmp_path / "ready.json"),
        "VLMQ_LIMITS__BATCH_SIZE": "2",
    }
    if quant := os.environ.get("VLMQ_TEST_FULL_QUANTIZATION"):
        env["VLMQ_MODEL__QUANTIZATION"] = quant
    files = [
        ("file", ("report.pdf", documents(4, 4)[0], "application/pdf")),
        ("file", ("screenshot.png", _png(1600, 1000), "image/png")),
    ]
    with running_system(env, tmp_path) as (base, procs):
        wait_for_log(procs["worker-gpu"], ENGINE_READY, timeout=900)
        job = httpx.post(f"{base}/v1/jobs", files=files, headers=KEY, timeout=60).json()
        deadline = time.monotonic() + 300
        while job["status"] not in ("completed", "failed") and time.monotonic() < deadline:
            time.sleep(0.5)
            job = httpx.get(f"{base}/v1/jobs/{job['id']}", headers=KEY, timeout=10).json()
        text = httpx.get(f"{base}/v1/jobs/{job['id']}/results", headers=KEY, timeout=30).text
    lines = [json.loads(x) for x in text.splitlines()]
    print(json.dumps(lines[0], indent=1)[:1500])
    assert job["status"] == "completed" and job["page_counts"]["completed"] == 5, job
    assert sorted((x["custom_id"], x["page"]) for x in lines) == [
        ("report.pdf", 1), ("report.pdf", 2), ("report.pdf", 3), ("report.pdf", 4), ("screenshot.png", 1),
    ]  # fmt: skip
    for x in lines:
        assert x["status"] == "succeeded" and x["model_id"] == "glm4v-9b-shape"
        assert BUDGET_FLAG in x["flags"], x  # the engine closed the reasoning at the budget
        assert x["reasoning"] and not x["answer_missing"] and not x["truncated"]
        assert BUDGET < x["usage"]["completion_tokens"] <= MAX_NEW
    page_tokens = [x["usage"]["prompt_tokens"] for x in lines if x["custom_id"] == "report.pdf"]
    assert min(page_tokens) > 1000  # a 1288 px page is ~1,600 vision tokens in GLM-4.1V
    ready = json.loads((tmp_path / "ready.json").read_text())
    assert ready["engine"] == "vllm" and ready["load_seconds"] > 0
    print(f"full model worker: engine ready in {ready['load_seconds']} s")
