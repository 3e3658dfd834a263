"""The real GPU worker (`vlmq worker --queues gpu` with the vLLM engine) behind the API, end to end."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx

from api.cli import ENGINE_READY
from api.cli.processes import wait_for_log
from tests.fixtures.models import PAGE_SIDE, taught_pdf
from tests.system import running_system

KEY = {"Authorization": "Bearer test-key"}


def test_pdf_through_the_vllm_worker(
    service_env: dict[str, str], taught_model_dir: Path, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        **service_env,
        "VLMQ_MODEL__ENGINE": "vllm",
        "VLMQ_MODEL__PATH": str(taught_model_dir),
        "VLMQ_MODEL__DTYPE": "bfloat16",
        "VLMQ_MODEL__MODEL_ID": "tiny-taught",
        "VLMQ_MODEL__MAX_MODEL_LEN": "4096",
        "VLMQ_MODEL__GPU_MEMORY_UTILIZATION": "0.3",
        "VLMQ_MODEL__MAX_NEW_TOKENS": "64",
        "VLMQ_LIMITS__RENDER_LONGEST_SIDE": str(PAGE_SIDE),
        "VLMQ_LIMITS__BATCH_SIZE": "1",
    }
    with running_system(env, tmp_path) as (base, procs):
        wait_for_log(procs["worker-gpu"], ENGINE_READY, timeout=600)
        files = [("file", ("taught.pdf", taught_pdf(), "application/pdf"))]
        job = httpx.post(f"{base}/v1/jobs", files=files, headers=KEY, timeout=30).json()
        deadline = time.monotonic() + 300
        while job["status"] not in ("completed", "failed") and time.monotonic() < deadline:
            time.sleep(0.5)
            job = httpx.get(f"{base}/v1/jobs/{job['id']}", headers=KEY, timeout=10).json()
        assert job["status"] == "completed", job
        text = httpx.get(f"{base}/v1/jobs/{job['id']}/results", headers=KEY, timeout=30).text
        lines = [json.loads(x) for x in text.splitlines()]
    assert [x["page"] for x in lines] == [1, 2, 3]
    assert (lines[0]["reasoning"], lines[0]["answer"]) == ("A title page.", "Quarterly report")
    assert lines[1]["boxes"] == ["42"] and lines[1]["model_id"] == "tiny-taught"
    print(procs["worker-gpu"].log_tail(2000))
