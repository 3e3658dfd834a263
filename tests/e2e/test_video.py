"""Videos end to end: `vlmq submit` (multipart upload) and a JSON job over HTTP, to separately running
API and workers with the tiny model taught one video. The good clip gets its exact taught answer
(reasoning and answer apart); every bad video fails alone with its own code; the jobs complete."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_pipeline import KEY, results_by_custom_id, s3_client, s3_keys, wait_done
from tests.fixtures.video_model import VIDEO_PROMPT, taught_video_model
from tests.fixtures.videos import BAD, GOOD, TOO_LARGE_LIMIT
from tests.system import running_system as start_system

pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="module")
def video_env(service_env: dict[str, str]) -> dict[str, str]:
    """This module's system runs the video-taught model (conftest's runs the page-taught one). Its own
    Redis key prefix keeps the two systems' workers off each other's queues."""
    return {
        **os.environ,
        **service_env,
        "VLMQ_REDIS__KEY_PREFIX": service_env["VLMQ_REDIS__KEY_PREFIX"] + "video-",
        "VLMQ_MODEL__PATH": str(taught_video_model()),
        "VLMQ_MODEL__MODEL_ID": "tiny-glm4v-video",
        "VLMQ_MODEL__MAX_NEW_TOKENS": "96",
        "VLMQ_LIMITS__MAX_VIDEO_BYTES": str(TOO_LARGE_LIMIT),  # too-large.mp4 is over it, the rest under
    }


@pytest.fixture(scope="module")
def video_system(video_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with start_system(video_env, tmp_path_factory.mktemp("video-logs")) as (base, _):
        yield base


def check_taught_answer(lines: list[dict[str, Any]]) -> None:
    (line,) = lines  # a video is one unit: one result line
    assert (line["status"], line["page"], line["error"]) == ("succeeded", 1, None), line
    assert (line["reasoning"], line["answer"]) == ("A square moves.", "Left to right")
    assert line["finish_reason"] == "stop" and line["model_id"] == "tiny-glm4v-video"
    # 3 pairs of frames, each <|begin_of_image|>, 24 <|image|>, <|end_of_image|> and a timestamp.
    assert line["usage"]["prompt_tokens"] > 3 * 27


def test_vlmq_submit_videos_good_and_bad(video_system: str, video_env: dict[str, str]) -> None:
    files = [str(FIXTURES / name) for name in [GOOD, *sorted(BAD)]]
    env = {**video_env, "VLMQ_API__BASE_URL": video_system}
    cmd = [sys.executable, "-m", "api.cli", "submit", *files, "--prompt", VIDEO_PROMPT]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=True).stdout
    job_id = out.split("job ", 1)[1].split()[0]
    job = wait_done(video_system, job_id)

    assert job["status"] == "completed"
    counts = {"total": 1 + len(BAD), "completed": 1, "failed": len(BAD), "cancelled": 0, "expired": 0}
    assert job["request_counts"] == counts
    assert job["page_counts"] == {"total": 1, "completed": 1, "failed": 0, "cancelled": 0, "expired": 0}
    lines = results_by_custom_id(video_system, job_id)
    check_taught_answer(lines[GOOD])
    for name, code in BAD.items():
        (line,) = lines[name]
        assert (line["status"], line["error"]["code"]) == ("failed", code), line
        assert name in line["error"]["message"]
    # The clip prep stored for the GPU worker: content-addressed, one object per sampling.
    assert [
        k for k in s3_keys(video_env, "media/") if k.endswith("/video-2fps-300s-600f-6144t-1288px/clip.zip")
    ]


def test_json_job_with_an_s3_video(video_system: str, video_env: dict[str, str]) -> None:
    s3 = s3_client(video_env)
    bucket, key = video_env["VLMQ_S3__BUCKET"], f"inputs/{uuid.uuid4().hex}/holiday.mp4"
    s3.put_object(Bucket=bucket, Key=key, Body=(FIXTURES / GOOD).read_bytes())
    body = {"items": [{"custom_id": "holiday", "uri": f"s3://{bucket}/{key}", "prompt": VIDEO_PROMPT}]}
    r = httpx.post(f"{video_system}/v1/jobs", json=body, headers=KEY, timeout=30)
    assert r.status_code == 202, r.text
    job = wait_done(video_system, r.json()["id"])
    assert job["status"] == "completed"
    check_taught_answer(results_by_custom_id(video_system, job["id"])["holiday"])
